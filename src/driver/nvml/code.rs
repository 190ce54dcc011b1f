//! NVML's return codes: their names, the text `nvmlErrorString` gives them, and what
//! each means to fabrik. Shared by the NVML driver, the in-process simulated GPUs and the
//! simulated libnvidia-ml, so all three report a failure the same way.
//!
//! The values are nvml-wrapper-sys's (generated from `nvml.h`); the texts are
//! `nvmlErrorString`'s as far as we know them (`In use by another client` for
//! `NVML_ERROR_IN_USE` is what `nvidia-smi` prints when a GPU is busy).

use std::ffi::CStr;

use nvml_wrapper_sys::bindings as sys;

use crate::driver::{DriverError, ErrorKind};

/// An `nvmlReturn_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub u32);

impl Code {
    pub const SUCCESS: Code = Code(sys::nvmlReturn_enum_NVML_SUCCESS);
    pub const UNINITIALIZED: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_UNINITIALIZED);
    pub const INVALID_ARGUMENT: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    pub const NOT_SUPPORTED: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
    pub const NO_PERMISSION: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_NO_PERMISSION);
    pub const NOT_FOUND: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_NOT_FOUND);
    pub const INSUFFICIENT_SIZE: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE);
    pub const FUNCTION_NOT_FOUND: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND);
    pub const RESET_REQUIRED: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED);
    pub const IN_USE: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_IN_USE);
    pub const INSUFFICIENT_RESOURCES: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES);
    pub const ALREADY_INITIALIZED: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_ALREADY_INITIALIZED);
    pub const DRIVER_NOT_LOADED: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED);
    pub const LIBRARY_NOT_FOUND: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND);
    pub const GPU_IS_LOST: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
    pub const LIB_RM_VERSION_MISMATCH: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH);
    pub const NOT_READY: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_NOT_READY);
    pub const GPU_NOT_FOUND: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_GPU_NOT_FOUND);
    pub const INVALID_STATE: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_INVALID_STATE);
    pub const UNKNOWN: Code = Code(sys::nvmlReturn_enum_NVML_ERROR_UNKNOWN);

    pub fn is_success(self) -> bool {
        self == Code::SUCCESS
    }

    /// The constant's name in `nvml.h`, which is what [`DriverError::code`] carries.
    pub fn name(self) -> &'static str {
        self.entry().map_or("NVML_ERROR_UNKNOWN", |e| e.1)
    }

    /// What `nvmlErrorString` returns for this code.
    pub fn text(self) -> &'static CStr {
        self.entry().map_or(c"Unknown Error", |e| e.2)
    }

    pub fn message(self) -> &'static str {
        self.text().to_str().unwrap_or("Unknown Error")
    }

    /// How fabrik treats the failure. `NOT_SUPPORTED` is the GPU's or the library's
    /// answer that it cannot do this at all; for MIG calls on a GPU whose MIG is only
    /// switched off the callers refine it to [`ErrorKind::Refused`].
    pub fn kind(self) -> ErrorKind {
        match self {
            Code::NOT_FOUND | Code::GPU_NOT_FOUND => ErrorKind::NotFound,
            Code::ALREADY_INITIALIZED => ErrorKind::Exists,
            Code::INVALID_ARGUMENT
            | Code::IN_USE
            | Code::INSUFFICIENT_RESOURCES
            | Code::RESET_REQUIRED
            | Code::INVALID_STATE
            | Code::NOT_READY => ErrorKind::Refused,
            Code::NOT_SUPPORTED | Code::FUNCTION_NOT_FOUND => ErrorKind::Unsupported,
            Code::UNINITIALIZED
            | Code::DRIVER_NOT_LOADED
            | Code::LIBRARY_NOT_FOUND
            | Code::GPU_IS_LOST
            | Code::LIB_RM_VERSION_MISMATCH => ErrorKind::Unreachable,
            _ => ErrorKind::Failed,
        }
    }

    /// A driver error for this code: `what` says what was being done, the library's
    /// text follows it.
    pub fn error(self, what: impl std::fmt::Display) -> DriverError {
        DriverError::new(self.kind(), format!("{what}: {}", self.message())).with_code(self.name())
    }

    fn entry(self) -> Option<&'static (u32, &'static str, &'static CStr)> {
        CODES.iter().find(|e| e.0 == self.0)
    }
}

use sys::*;

/// Every code nvml-wrapper-sys knows, with its name and its text.
static CODES: &[(u32, &str, &CStr)] = &[
    (nvmlReturn_enum_NVML_SUCCESS, "NVML_SUCCESS", c"Success"),
    (nvmlReturn_enum_NVML_ERROR_UNINITIALIZED, "NVML_ERROR_UNINITIALIZED", c"Uninitialized"),
    (nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT, "NVML_ERROR_INVALID_ARGUMENT", c"Invalid Argument"),
    (nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED, "NVML_ERROR_NOT_SUPPORTED", c"Not Supported"),
    (nvmlReturn_enum_NVML_ERROR_NO_PERMISSION, "NVML_ERROR_NO_PERMISSION", c"Insufficient Permissions"),
    (nvmlReturn_enum_NVML_ERROR_ALREADY_INITIALIZED, "NVML_ERROR_ALREADY_INITIALIZED", c"Already Initialized"),
    (nvmlReturn_enum_NVML_ERROR_NOT_FOUND, "NVML_ERROR_NOT_FOUND", c"Not Found"),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE, "NVML_ERROR_INSUFFICIENT_SIZE", c"Insufficient Size"),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_POWER, "NVML_ERROR_INSUFFICIENT_POWER", c"Insufficient External Power"),
    (nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED, "NVML_ERROR_DRIVER_NOT_LOADED", c"Driver Not Loaded"),
    (nvmlReturn_enum_NVML_ERROR_TIMEOUT, "NVML_ERROR_TIMEOUT", c"Timeout"),
    (nvmlReturn_enum_NVML_ERROR_IRQ_ISSUE, "NVML_ERROR_IRQ_ISSUE", c"Interrupt request issue"),
    (nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND, "NVML_ERROR_LIBRARY_NOT_FOUND", c"NVML Shared Library Not Found"),
    (nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND, "NVML_ERROR_FUNCTION_NOT_FOUND", c"Function Not Found"),
    (nvmlReturn_enum_NVML_ERROR_CORRUPTED_INFOROM, "NVML_ERROR_CORRUPTED_INFOROM", c"Corrupted infoROM"),
    (nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST, "NVML_ERROR_GPU_IS_LOST", c"GPU is lost"),
    (nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED, "NVML_ERROR_RESET_REQUIRED", c"GPU requires restart"),
    (
        nvmlReturn_enum_NVML_ERROR_OPERATING_SYSTEM,
        "NVML_ERROR_OPERATING_SYSTEM",
        c"The operating system has blocked the request.",
    ),
    (
        nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
        c"RM has detected an NVML/RM version mismatch.",
    ),
    (nvmlReturn_enum_NVML_ERROR_IN_USE, "NVML_ERROR_IN_USE", c"In use by another client"),
    (nvmlReturn_enum_NVML_ERROR_MEMORY, "NVML_ERROR_MEMORY", c"Insufficient Memory"),
    (nvmlReturn_enum_NVML_ERROR_NO_DATA, "NVML_ERROR_NO_DATA", c"No data"),
    (
        nvmlReturn_enum_NVML_ERROR_VGPU_ECC_NOT_SUPPORTED,
        "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
        c"The requested vgpu operation is not available on target device, becasue ECC is enabled",
    ),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES, "NVML_ERROR_INSUFFICIENT_RESOURCES", c"Insufficient resources"),
    (
        nvmlReturn_enum_NVML_ERROR_FREQ_NOT_SUPPORTED,
        "NVML_ERROR_FREQ_NOT_SUPPORTED",
        c"Setting frequency not supported",
    ),
    (
        nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
        "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
        c"Argument version mismatch",
    ),
    (nvmlReturn_enum_NVML_ERROR_DEPRECATED, "NVML_ERROR_DEPRECATED", c"Deprecated"),
    (nvmlReturn_enum_NVML_ERROR_NOT_READY, "NVML_ERROR_NOT_READY", c"Not ready"),
    (nvmlReturn_enum_NVML_ERROR_GPU_NOT_FOUND, "NVML_ERROR_GPU_NOT_FOUND", c"GPU not found"),
    (nvmlReturn_enum_NVML_ERROR_INVALID_STATE, "NVML_ERROR_INVALID_STATE", c"Invalid state"),
    (nvmlReturn_enum_NVML_ERROR_UNKNOWN, "NVML_ERROR_UNKNOWN", c"Unknown Error"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_name() {
        let mut names: Vec<&str> = CODES.iter().map(|e| e.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CODES.len());
        assert_eq!(Code::IN_USE.name(), "NVML_ERROR_IN_USE");
        assert_eq!(Code::IN_USE.message(), "In use by another client");
        assert_eq!(Code(12345).name(), "NVML_ERROR_UNKNOWN");
    }

    #[test]
    fn errors_carry_the_code_and_the_library_text() {
        let e = Code::INSUFFICIENT_RESOURCES.error("create a GPU instance");
        assert_eq!(e.kind, ErrorKind::Refused);
        assert_eq!(e.code.as_deref(), Some("NVML_ERROR_INSUFFICIENT_RESOURCES"));
        assert_eq!(e.message, "create a GPU instance: Insufficient resources");
    }
}
