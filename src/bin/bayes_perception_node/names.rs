//! The node's relative topic names as ROS resolves them: the namespace expanded, then the
//! command line's remapping rules applied by rcl itself (`rcl_remap_topic_name`, the
//! function rcl uses when it creates a subscription). r2r does not expose its node's rcl
//! handle, so the rules are parsed from the process arguments once more here. The names
//! go into the ready line and are where the camera's publishers are looked up.

use std::ffi::{c_char, CStr, CString};

use r2r_rcl::{
    rcl_allocator_t, rcl_arguments_fini, rcl_arguments_t, rcl_get_zero_initialized_arguments,
    rcl_parse_arguments, rcl_ret_t, rcutils_get_default_allocator, rcutils_reset_error,
};

unsafe extern "C" {
    // rcl/remap.h (public rcl API since Dashing); not in r2r_rcl's generated bindings.
    fn rcl_remap_topic_name(
        local_arguments: *const rcl_arguments_t,
        global_arguments: *const rcl_arguments_t,
        topic_name: *const c_char,
        node_name: *const c_char,
        node_namespace: *const c_char,
        allocator: rcl_allocator_t,
        output_name: *mut *mut c_char,
    ) -> rcl_ret_t;
}

/// The remapping rules of this process's command line, for one node.
pub struct Resolver {
    arguments: rcl_arguments_t,
    node_name: CString,
    namespace: String,
}

impl Resolver {
    /// The process's `--ros-args` rules for the node `node_name` in `namespace` (both as
    /// the node reports them, after any remapping of the node itself). `None` when rcl
    /// cannot parse them (it already did once to create the context, so it can).
    pub fn from_process_arguments(node_name: &str, namespace: &str) -> Option<Self> {
        let node_name = CString::new(node_name).ok()?;
        let arguments: Vec<CString> = std::env::args_os()
            .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
            .collect();
        let pointers: Vec<*const c_char> = arguments.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: argv holds `pointers.len()` NUL-terminated strings that outlive the call;
        // rcl copies what it keeps into `parsed`, which is finalised on drop.
        let parsed = unsafe {
            let mut parsed = rcl_get_zero_initialized_arguments();
            let ret = rcl_parse_arguments(
                pointers.len() as i32,
                pointers.as_ptr(),
                rcutils_get_default_allocator(),
                &mut parsed,
            );
            if ret != 0 {
                // rcl finalised what it had parsed; its error is not ours to report.
                rcutils_reset_error();
                return None;
            }
            parsed
        };
        Some(Resolver {
            arguments: parsed,
            node_name,
            namespace: namespace.to_owned(),
        })
    }

    /// The fully qualified name a relative topic name (`image`, `camera_info`) resolves to.
    pub fn resolve(&self, relative: &str) -> String {
        let expanded = expand(&self.namespace, relative);
        let (Ok(topic), Ok(namespace)) = (
            CString::new(expanded.as_str()),
            CString::new(self.namespace.as_str()),
        ) else {
            return expanded;
        };
        let mut output: *mut c_char = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the output, when rcl sets it, was
        // allocated with the default allocator and is freed with it below.
        unsafe {
            let allocator = rcutils_get_default_allocator();
            let ret = rcl_remap_topic_name(
                std::ptr::null(),
                &self.arguments,
                topic.as_ptr(),
                self.node_name.as_ptr(),
                namespace.as_ptr(),
                allocator,
                &mut output,
            );
            if ret != 0 {
                rcutils_reset_error();
                return expanded;
            }
            if output.is_null() {
                // No rule for this name.
                return expanded;
            }
            let remapped = CStr::from_ptr(output).to_string_lossy().into_owned();
            if let Some(deallocate) = allocator.deallocate {
                deallocate(output.cast(), allocator.state);
            }
            remapped
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // SAFETY: parsed by rcl_parse_arguments, finalised once.
        unsafe {
            rcl_arguments_fini(&mut self.arguments);
        }
    }
}

/// A relative name in `namespace` (`/` or `/robot`), as rcl expands it before remapping.
pub fn expand(namespace: &str, relative: &str) -> String {
    if relative.starts_with('/') {
        relative.to_owned()
    } else {
        format!("{}/{relative}", namespace.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_names_expand_in_the_namespace() {
        assert_eq!(super::expand("/", "image"), "/image");
        assert_eq!(
            super::expand("/robot", "image/compressed"),
            "/robot/image/compressed"
        );
        assert_eq!(super::expand("/robot", "/abs"), "/abs");
    }
}
