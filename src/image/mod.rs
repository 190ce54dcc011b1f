//! Base images from outside the factory's hosts: fetched on the machine that runs fabrik
//! (an `http(s)://` URL, or a `file:` path here), hashed as they stream into a temporary
//! file, and checked against the image's declared `sha256` before any host is touched.

pub mod fetch;

pub use fetch::{FetchError, Fetched, Source, fetch};
