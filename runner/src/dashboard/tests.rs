//! Dashboard tests (in process, through the router).
