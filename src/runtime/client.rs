//! The smol client adapter (to be written).
