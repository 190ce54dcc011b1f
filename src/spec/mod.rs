//! The desired-state language: files → typed [`model::Spec`] with source spans.

pub mod decode;
pub mod effective;
pub mod kdl;
pub mod load;
pub mod model;
pub mod schema;
pub mod shape;
pub mod source;
pub mod text;
pub mod tree;
pub mod types;
pub mod yaml;
