//! virtual card.
