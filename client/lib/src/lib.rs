//! keyward wire protocol.
