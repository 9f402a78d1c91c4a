//! keyward agent library.
