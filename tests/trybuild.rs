//! Compile-fail (and compile-pass) cases of the registry's compile-time contract, one per
//! mistake: `tests/ui/<area>/<what-is-wrong>.rs` with the compiler's `.stderr` beside it.
//! Regenerate with `TRYBUILD=overwrite cargo test -p workspace-tests --test trybuild` and
//! review the diff.

#[test]
fn ui() {
    // trybuild rejects an empty `TRYBUILD`; a CI that clears it (`TRYBUILD=`) means "compare,
    // never rewrite", which is what unset means.
    if std::env::var_os("TRYBUILD").is_some_and(|v| v.is_empty()) {
        // SAFETY: this binary's only test, before trybuild starts any thread or reads the
        // environment.
        unsafe { std::env::remove_var("TRYBUILD") };
    }
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/memory/*.rs");
    t.compile_fail("ui/spec/*.rs");
    t.compile_fail("ui/registry/*.rs");
    t.compile_fail("ui/info/*.rs");
    t.compile_fail("ui/syntax/*.rs");
}
