//! The compile-time checked registry: `CandleModelInfo` and the generated statics of the twelve models.
