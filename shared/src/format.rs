//! The model file: parser and writer. (In progress.)
