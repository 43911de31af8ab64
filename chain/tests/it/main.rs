//! Chain client integration tests against a real anvil.
