//! What the process's `--ros-args` say about this node, read by rcl itself: its relative
//! topic names as ROS resolves them (the namespace expanded, then the remapping rules
//! applied by `rcl_remap_topic_name`, the function rcl uses when it creates a
//! subscription), and its parameter overrides (params files, `-p`) with the params-file
//! entries chosen as rclcpp and rclpy choose them. r2r does not expose its node's rcl
//! handle, so the arguments are parsed once more here. The names go into the ready line
//! and are where the camera's publishers are looked up.

use std::ffi::{c_char, CStr, CString};

use bayes_perception::config::node_name_matches;
use bayes_perception::node::params::{
    command_line_param_names, merge_overrides, parameter_type, Entry, ParamValue,
};
use r2r_rcl::{
    rcl_allocator_t, rcl_arguments_fini, rcl_arguments_get_param_overrides, rcl_arguments_t,
    rcl_get_zero_initialized_arguments, rcl_params_t, rcl_parse_arguments, rcl_ret_t,
    rcl_variant_t, rcl_yaml_node_struct_fini, rcutils_get_default_allocator, rcutils_reset_error,
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

/// This process's `--ros-args` as rcl parsed them (remapping rules, params files, `-p`),
/// for one node.
pub struct RosArguments {
    arguments: rcl_arguments_t,
    node_name: CString,
    namespace: String,
}

impl RosArguments {
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
        Some(RosArguments {
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

    /// The parameter values the command line gives the node `node` (fully qualified): the
    /// params-file entries that apply to it ([`node_name_matches`]: `/**`, its name,
    /// wildcards; r2r 0.9.7 applies a bare `bayes_perception:` entry in every namespace and
    /// no wildcard but `/**`) and `-p` values. As in rclcpp, entries are taken in rcl's
    /// order, a later one over an earlier one: rcl keeps one entry per name in the order
    /// it first met them and puts `-p name:=value` into `/**`, so a node's own entry in a
    /// params file wins over `-p`. Each value says whether it is meant for this node by
    /// name ([`merge_overrides`]). `None` when rcl cannot give them.
    pub fn param_overrides(&self, node: &str) -> Option<Vec<(String, ParamValue, Entry)>> {
        let mut params: *mut rcl_params_t = std::ptr::null_mut();
        // SAFETY: the arguments were parsed by rcl; `params`, when rcl sets it, is owned
        // here and finalised once below, after its strings were copied.
        unsafe {
            if rcl_arguments_get_param_overrides(&self.arguments, &mut params) != 0 {
                rcutils_reset_error();
                return None;
            }
            if params.is_null() {
                return Some(Vec::new()); // no params file, no -p
            }
            let all = &*params;
            let mut entries = Vec::new();
            for n in 0..all.num_nodes {
                let entry = CStr::from_ptr(*all.node_names.add(n)).to_string_lossy();
                if !node_name_matches(&entry, node) {
                    continue;
                }
                let entry_params = &*all.params.add(n);
                let values = (0..entry_params.num_params)
                    .map(|p| {
                        let name = CStr::from_ptr(*entry_params.parameter_names.add(p));
                        let value = param_from_rcl(&*entry_params.parameter_values.add(p));
                        (name.to_string_lossy().into_owned(), value)
                    })
                    .collect();
                entries.push((entry.into_owned(), values));
            }
            rcl_yaml_node_struct_fini(params);
            let arguments: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            Some(merge_overrides(
                entries,
                &command_line_param_names(&arguments),
            ))
        }
    }
}

/// A value as rcl's YAML parser holds it (the one pointer that is set).
fn param_from_rcl(value: &rcl_variant_t) -> ParamValue {
    // SAFETY: rcl sets at most one pointer, to a value it owns.
    unsafe {
        if let Some(b) = value.bool_value.as_ref() {
            ParamValue::Bool(*b)
        } else if let Some(i) = value.integer_value.as_ref() {
            ParamValue::Integer(*i)
        } else if let Some(d) = value.double_value.as_ref() {
            ParamValue::Double(*d)
        } else if !value.string_value.is_null() {
            ParamValue::String(
                CStr::from_ptr(value.string_value)
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if !value.byte_array_value.is_null() {
            ParamValue::Other(parameter_type::BYTE_ARRAY)
        } else if !value.bool_array_value.is_null() {
            ParamValue::Other(parameter_type::BOOL_ARRAY)
        } else if !value.integer_array_value.is_null() {
            ParamValue::Other(parameter_type::INTEGER_ARRAY)
        } else if !value.double_array_value.is_null() {
            ParamValue::Other(parameter_type::DOUBLE_ARRAY)
        } else if !value.string_array_value.is_null() {
            ParamValue::Other(parameter_type::STRING_ARRAY)
        } else {
            ParamValue::Other(parameter_type::NOT_SET)
        }
    }
}

impl Drop for RosArguments {
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
