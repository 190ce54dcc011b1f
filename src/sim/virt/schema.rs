//! libvirt's domain schema check, with the schema parsed once per process.
//!
//! fabrik defines domains with `VIR_DOMAIN_DEFINE_VALIDATE`: libvirt then checks the XML
//! against its RelaxNG schema (`domain.rng`) and refuses what does not match. On a real
//! host libvirtd keeps nothing between two defines either, but it does that work in its
//! own process; a twin's libvirt (the test driver) runs in fabrik's, where every define
//! read and parsed the ~40 schema files again and freed them: 75% of the CPU of an
//! `apply --sim`, for 2% spent validating.
//!
//! So the twin validates with the same schema file and the same libxml2 (libvirt's), the
//! schema parsed once: a document it finds valid is defined without the flag (libvirt
//! would validate it the same way and find it valid), and one it does not find valid, or
//! any doubt (no schema file, an internal error), goes to libvirt with the flag, so the
//! refusal is libvirt's own, word for word. The unsafe code is confined to this file.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Where libvirt's packages install its schemas (libvirt's `PKGDATADIR "/schemas"`).
const DOMAIN_SCHEMA: &str = "/usr/share/libvirt/schemas/domain.rng";

/// libvirt's parse flags for a document it validates (`virXMLParseHelper`).
const XML_PARSE_NOERROR: c_int = 1 << 5;
const XML_PARSE_NOWARNING: c_int = 1 << 6;
const XML_PARSE_NONET: c_int = 1 << 11;

#[link(name = "xml2")]
unsafe extern "C" {
    fn xmlRelaxNGInitTypes() -> c_int;
    fn xmlRelaxNGNewParserCtxt(url: *const c_char) -> *mut c_void;
    fn xmlRelaxNGSetParserStructuredErrors(ctxt: *mut c_void, handler: ErrorHandler, data: *mut c_void);
    fn xmlRelaxNGParse(ctxt: *mut c_void) -> *mut c_void;
    fn xmlRelaxNGFreeParserCtxt(ctxt: *mut c_void);
    fn xmlRelaxNGNewValidCtxt(schema: *mut c_void) -> *mut c_void;
    fn xmlRelaxNGSetValidStructuredErrors(ctxt: *mut c_void, handler: ErrorHandler, data: *mut c_void);
    fn xmlRelaxNGValidateDoc(ctxt: *mut c_void, doc: *mut c_void) -> c_int;
    fn xmlRelaxNGFreeValidCtxt(ctxt: *mut c_void);
    fn xmlReadMemory(
        buffer: *const c_char,
        size: c_int,
        url: *const c_char,
        encoding: *const c_char,
        options: c_int,
    ) -> *mut c_void;
    fn xmlFreeDoc(doc: *mut c_void);
}

type ErrorHandler = unsafe extern "C" fn(data: *mut c_void, error: *mut c_void);

/// Errors are not printed: an invalid document goes to libvirt, which reports them.
unsafe extern "C" fn quiet(_data: *mut c_void, _error: *mut c_void) {}

/// The parsed schema, used by one validation at a time: libxml2 does not promise that
/// two RelaxNG validations may share a schema at once, and a validation costs a small
/// part of a define.
struct Schema(*mut c_void);

// SAFETY: the schema is only used under the mutex around it, and never freed (it lives
// as long as the process).
unsafe impl Send for Schema {}

fn schema() -> Option<&'static Mutex<Schema>> {
    static SCHEMA: OnceLock<Option<Mutex<Schema>>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let path = CString::new(DOMAIN_SCHEMA).ok()?;
            if !std::path::Path::new(DOMAIN_SCHEMA).exists() {
                return None;
            }
            // SAFETY: plain libxml2 calls on a path it reads; the parser context is freed
            // here, the schema kept. The type library is set up first, once (libxml2 2.9
            // does it without a lock at the first schema parsed), under the OnceLock.
            unsafe {
                xmlRelaxNGInitTypes();
                let ctxt = xmlRelaxNGNewParserCtxt(path.as_ptr());
                if ctxt.is_null() {
                    return None;
                }
                xmlRelaxNGSetParserStructuredErrors(ctxt, quiet, std::ptr::null_mut());
                let schema = xmlRelaxNGParse(ctxt);
                xmlRelaxNGFreeParserCtxt(ctxt);
                (!schema.is_null()).then_some(Mutex::new(Schema(schema)))
            }
        })
        .as_ref()
}

/// Whether libvirt's domain schema certainly accepts `xml`: `false` when it does not, or
/// when this cannot tell (the caller then leaves the check to libvirt).
pub fn domain_valid(xml: &str) -> bool {
    let Some(schema) = schema() else { return false };
    let Ok(len) = c_int::try_from(xml.len()) else { return false };
    let schema = schema.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: `xml` outlives the parse (libxml2 copies what it keeps); the document and the
    // validation context are freed here, whatever the outcome.
    unsafe {
        let doc = xmlReadMemory(
            xml.as_ptr().cast(),
            len,
            std::ptr::null(),
            std::ptr::null(),
            XML_PARSE_NONET | XML_PARSE_NOWARNING | XML_PARSE_NOERROR,
        );
        if doc.is_null() {
            return false;
        }
        let ctxt = xmlRelaxNGNewValidCtxt(schema.0);
        let valid = if ctxt.is_null() {
            false
        } else {
            xmlRelaxNGSetValidStructuredErrors(ctxt, quiet, std::ptr::null_mut());
            let r = xmlRelaxNGValidateDoc(ctxt, doc);
            xmlRelaxNGFreeValidCtxt(ctxt);
            r == 0
        };
        xmlFreeDoc(doc);
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_domain_is_valid_and_a_misspelt_one_is_not() {
        if schema().is_none() {
            assert!(std::env::var("CI").is_err(), "{DOMAIN_SCHEMA} is missing");
            eprintln!("skipped: {DOMAIN_SCHEMA} is missing (libvirt is not installed)");
            return;
        }
        let ok = "<domain type='test'><name>a</name><memory>1024</memory><os><type>hvm</type></os></domain>";
        assert!(domain_valid(ok));
        assert!(!domain_valid(&ok.replace("<memory>", "<memroy>").replace("</memory>", "</memroy>")));
        assert!(!domain_valid("<domain"));
        assert!(!domain_valid("<network><name>n</name></network>"));
    }
}
