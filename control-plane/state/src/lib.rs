//! Control-plane state machine (being written).
