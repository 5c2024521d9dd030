pub mod fixture_hub;
pub mod fixtures;
