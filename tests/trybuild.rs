//! Compile-fail (and compile-pass) cases of the registry's compile-time contract, one per
//! mistake: `tests/ui/<area>/<what-is-wrong>.rs` with the compiler's `.stderr` beside it.
//! Regenerate with `TRYBUILD=overwrite cargo test -p workspace-tests --test trybuild` and
//! review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/memory/*.rs");
    t.compile_fail("ui/spec/*.rs");
    t.compile_fail("ui/registry/*.rs");
    t.compile_fail("ui/info/*.rs");
    t.compile_fail("ui/syntax/*.rs");
}
