//! Helpers shared by the integration tests. Each test binary compiles this
//! module and uses only part of it.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod softhsm;
pub mod stack;
