//! The command line: parses flags into validated configs and calls the library.
