//! Only tests live in this package (tests/tests/*.rs).
