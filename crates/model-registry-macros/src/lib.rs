//! Proc-macro shell over build-support: declare a model of your own, checked like the twelve.
