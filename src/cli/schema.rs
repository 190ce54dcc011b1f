//! `fabrik schema`: the JSON Schema of the YAML form, or the Markdown key reference.

use super::{SchemaFormat, exit};
use crate::spec::schema;

pub fn run(format: SchemaFormat) -> u8 {
    match format {
        SchemaFormat::Json => super::out::println(&render_json()),
        SchemaFormat::Markdown => super::out::print(&schema::markdown()),
    }
    exit::OK
}

/// Exactly what `schema/fabrik.schema.json` holds.
pub fn render_json() -> String {
    serde_json::to_string_pretty(&schema::json_schema()).unwrap_or_default()
}
