//! The smol server adapter (to be written).
