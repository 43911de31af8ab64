//! network (being built).
