//! The params file as ROS 2 parameters: dotted names (`mc.samples`), typed values, and the
//! parameter services of a running node (`ros2 param get/set/list/describe`, rclpy's
//! parameter clients) as plain functions of [`ParamServer`].
//!
//! Every key of [`Params`] is one ROS parameter. The r2r layer serves the six
//! rcl_interfaces services from a [`ParamServer`] and only converts messages, so a live
//! change is validated with the same checks as the params file. A request that sets
//! several parameters is checked as a whole: moving the depth colour range from 0..50 m to
//! 60..100 m, or switching to mc with a new sample count, is accepted in one request
//! whatever the order of its values.

use std::sync::{Mutex, MutexGuard, OnceLock};

pub use crate::config::ROS_RESERVED;
use crate::config::{reserved_type_error, Params, QOS_OVERRIDES};

/// rcl_interfaces/ParameterType: the kind of a parameter value, as messages carry it.
pub mod parameter_type {
    pub const NOT_SET: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INTEGER: u8 = 2;
    pub const DOUBLE: u8 = 3;
    pub const STRING: u8 = 4;
    pub const BYTE_ARRAY: u8 = 5;
    pub const BOOL_ARRAY: u8 = 6;
    pub const INTEGER_ARRAY: u8 = 7;
    pub const DOUBLE_ARRAY: u8 = 8;
    pub const STRING_ARRAY: u8 = 9;
}

/// A ROS 2 parameter value: the scalar kinds our parameters use, and any other kind
/// (arrays, "not set") by its [`parameter_type`], which every set refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    /// Another [`parameter_type`] (not set, the arrays).
    Other(u8),
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Integer(_) => "integer",
            ParamValue::Double(_) => "double",
            ParamValue::String(_) => "string",
            ParamValue::Other(parameter_type::NOT_SET) => "value that is not set",
            ParamValue::Other(parameter_type::BYTE_ARRAY) => "byte array",
            ParamValue::Other(parameter_type::BOOL_ARRAY) => "bool array",
            ParamValue::Other(parameter_type::INTEGER_ARRAY) => "integer array",
            ParamValue::Other(parameter_type::DOUBLE_ARRAY) => "double array",
            ParamValue::Other(parameter_type::STRING_ARRAY) => "string array",
            ParamValue::Other(_) => "value of unknown type",
        }
    }

    /// The rcl_interfaces/ParameterType constant of this value.
    pub fn type_id(&self) -> u8 {
        match self {
            ParamValue::Bool(_) => parameter_type::BOOL,
            ParamValue::Integer(_) => parameter_type::INTEGER,
            ParamValue::Double(_) => parameter_type::DOUBLE,
            ParamValue::String(_) => parameter_type::STRING,
            ParamValue::Other(id) => *id,
        }
    }

    fn to_yaml(&self) -> serde_yaml::Value {
        match self {
            ParamValue::Bool(b) => (*b).into(),
            ParamValue::Integer(i) => (*i).into(),
            ParamValue::Double(d) => (*d).into(),
            ParamValue::String(s) => s.clone().into(),
            ParamValue::Other(_) => serde_yaml::Value::Null,
        }
    }

    fn from_yaml(value: &serde_yaml::Value) -> Option<Self> {
        match value {
            serde_yaml::Value::Bool(b) => Some(ParamValue::Bool(*b)),
            serde_yaml::Value::Number(n) if n.is_f64() => n.as_f64().map(ParamValue::Double),
            serde_yaml::Value::Number(n) => n.as_i64().map(ParamValue::Integer),
            serde_yaml::Value::String(s) => Some(ParamValue::String(s.clone())),
            _ => None,
        }
    }
}

/// Each parameter's description: the comment lines right above its key in the shipped
/// params file (one source for the file's reader and `ros2 param describe`), joined.
fn descriptions() -> &'static std::collections::HashMap<String, String> {
    static PARSED: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    PARSED.get_or_init(|| parse_descriptions(include_str!("../../config/params.yaml")))
}

/// Comment blocks above keys of a params file, by dotted key under `ros__parameters`. A
/// block describes every key that follows it up to a blank line or the next comment.
fn parse_descriptions(text: &str) -> std::collections::HashMap<String, String> {
    let mut found = std::collections::HashMap::new();
    let mut comment: Vec<&str> = Vec::new();
    let mut after_key = false;
    // (indentation, key) of the groups the current line is in.
    let mut groups: Vec<(usize, String)> = Vec::new();
    let mut base: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            if after_key {
                comment.clear();
                after_key = false;
            }
            comment.push(text.trim());
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            comment.clear();
            continue;
        };
        after_key = true;
        if key == "ros__parameters" {
            base = Some(indent);
            groups.clear();
        } else if base.is_some_and(|b| indent > b) {
            groups.retain(|(i, _)| *i < indent);
            let mut name: Vec<&str> = groups.iter().map(|(_, k)| k.as_str()).collect();
            name.push(key);
            if value.trim().is_empty() {
                groups.push((indent, key.to_owned()));
            } else if !comment.is_empty() {
                // One space between words: the file aligns its comments in columns.
                let text = comment.join(" ");
                found.insert(
                    name.join("."),
                    text.split_whitespace().collect::<Vec<_>>().join(" "),
                );
            }
        }
        if value.trim().is_empty() {
            // A group's comment is its own, not its first key's.
            comment.clear();
        }
    }
    found
}

/// Parameters that only take effect at start-up; `ros2 param set` on them is rejected.
pub const RESTART_ONLY: &[&str] = &[
    "model",
    "device",
    "precision",
    "channels_last",
    "cpu_threads",
    "input.transport",
    "output.compressed",
];

/// The client library's parameters ([`ROS_RESERVED`]) a running node may change, as in
/// rclcpp: `use_sim_time` moves the node's clock to `/clock` and back.
pub const CLIENT_LIBRARY_LIVE: &[&str] = &["use_sim_time"];

/// Every parameter the node declares, with its value in `params`, in file order.
pub fn declared(params: &Params) -> Vec<(String, ParamValue)> {
    let value = serde_yaml::to_value(params).expect("Params serialise to YAML");
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<(String, ParamValue)>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().expect("Params keys are strings");
                let name = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, out);
            }
        }
        leaf => out.push((
            prefix.to_owned(),
            ParamValue::from_yaml(leaf).expect("Params leaves are scalars"),
        )),
    }
}

/// The error for a name the node does not have, with the nearest one it has (a typo
/// such as `mdoe` or `mc.sample`).
fn unknown_parameter(name: &str) -> String {
    match crate::config::nearest_parameter(name) {
        Some(known) => format!("unknown parameter `{name}` (did you mean `{known}`?)"),
        None => format!("unknown parameter `{name}`"),
    }
}

/// Sets one typed leaf of the YAML form of [`Params`].
fn set_in_tree(tree: &mut serde_yaml::Value, name: &str, value: &ParamValue) -> Result<(), String> {
    let mut slot = tree;
    for part in name.split('.') {
        slot = slot
            .as_mapping_mut()
            .and_then(|m| m.get_mut(part))
            .ok_or_else(|| unknown_parameter(name))?;
    }
    let current = ParamValue::from_yaml(slot)
        .ok_or_else(|| format!("`{name}` is a group, not a parameter"))?;
    if std::mem::discriminant(&current) != std::mem::discriminant(value) {
        let hint = if matches!(current, ParamValue::Double(_)) {
            format!(" ({})", crate::config::REAL_HINT)
        } else {
            String::new()
        };
        return Err(format!(
            "`{name}` has type {}, not {}{hint}",
            current.type_name(),
            value.type_name()
        ));
    }
    *slot = value.to_yaml();
    Ok(())
}

fn from_tree(tree: serde_yaml::Value) -> Result<Params, String> {
    let params: Params = serde_path_to_error::deserialize(tree)
        .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
    params.validate("parameter").map_err(|e| match e {
        // The key and the reason; the caller says where the values came from.
        crate::Error::Config { key, message, .. } => format!("`{key}`: {message}"),
        e => e.to_string(),
    })?;
    Ok(params)
}

/// `params` with every `(name, value)` of `request` set (later values win), validated as a
/// whole.
fn with_values(params: &Params, request: &[(String, ParamValue)]) -> Result<Params, String> {
    let mut tree = serde_yaml::to_value(params).expect("Params serialise to YAML");
    for (name, value) in request {
        set_in_tree(&mut tree, name, value)?;
    }
    from_tree(tree)
}

/// The names whose values differ between `old` and `new`, in file order.
pub fn changed(old: &Params, new: &Params) -> Vec<String> {
    declared(old)
        .into_iter()
        .zip(declared(new))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, _), _)| name)
        .collect()
}

/// rcl_interfaces/ListParameters: `depth` 0 lists every level.
pub const LIST_DEPTH_RECURSIVE: u64 = 0;

/// rcl_interfaces/ParameterDescriptor contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub name: String,
    /// rcl_interfaces/ParameterType (0 = not set: no such parameter).
    pub type_id: u8,
    pub description: String,
    /// Set at start-up only; a running node refuses to change it.
    pub read_only: bool,
    /// The allowed closed range of a number, where one says it (inclusive).
    pub integer_range: Option<(i64, i64)>,
    pub float_range: Option<(f64, f64)>,
}

/// What `set_parameters` did: one result per requested value, and the names whose values
/// changed.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOutcome {
    pub results: Vec<Result<(), String>>,
    pub changed: Vec<String>,
}

/// The parameter overrides rcl gives the node, merged: `entries` are the params-file
/// entries that apply to it, in rcl's order (entry name, its values), a later value over
/// an earlier one. A value is [`Entry::ThisNode`]'s when an entry naming this node gives
/// its name, wherever in the order, or when `-p` gave it on the command line
/// (`command_line`, [`command_line_param_names`]: rcl files `-p` under `/**`, but a
/// process's own command line is meant for its node); otherwise [`Entry::AnyNode`]'s.
pub fn merge_overrides(
    entries: Vec<(String, Vec<(String, ParamValue)>)>,
    command_line: &[String],
) -> Vec<(String, ParamValue, Entry)> {
    let mut merged: Vec<(String, ParamValue, Entry)> = Vec::new();
    for (entry, values) in entries {
        let given_by = if crate::config::entry_is_for_any_node(&entry) {
            Entry::AnyNode
        } else {
            Entry::ThisNode
        };
        for (name, value) in values {
            let mut meant = given_by;
            if command_line.contains(&name) {
                meant = Entry::ThisNode;
            }
            merged.retain(|(known, _, earlier)| {
                if *known == name && *earlier == Entry::ThisNode {
                    meant = Entry::ThisNode;
                }
                *known != name
            });
            merged.push((name, value, meant));
        }
    }
    merged
}

/// The names `-p NAME:=VALUE` (or `--param`) sets in the `--ros-args` sections of a
/// command line (`node:NAME:=VALUE` counts as NAME).
pub fn command_line_param_names(arguments: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    let mut ros_args = false;
    let mut rest = arguments.iter();
    while let Some(argument) = rest.next() {
        match argument.as_str() {
            "--ros-args" => ros_args = true,
            "--" => ros_args = false,
            "-p" | "--param" if ros_args => {
                let rule = rest.next().and_then(|rule| rule.split_once(":="));
                if let Some((name, _)) = rule {
                    names.push(name.rsplit(':').next().unwrap_or(name).to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

/// The node's parameters as the ROS parameter services see them.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamServer {
    params: Params,
    /// The client library's own parameters ([`ROS_RESERVED`]): as given at start-up, and
    /// those of [`CLIENT_LIBRARY_LIVE`] as set since.
    client_library: Vec<(String, ParamValue)>,
    /// `qos_overrides.*` parameters given at start-up, which this node does not read.
    qos_overrides: Vec<String>,
    /// Other nodes' keys given at start-up by entries for any node, passed over
    /// ([`crate::config::is_other_nodes_key`]).
    other_nodes: Vec<String>,
}

/// Whom a start-up value was given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// This node by name: a params-file entry that names it (`/front/bayes_perception`,
    /// `/**/bayes_perception`), or `-p` on its command line.
    ThisNode,
    /// Only params-file entries for any node ([`crate::config::entry_is_for_any_node`]:
    /// `/**`, `/front/*`).
    AnyNode,
}

impl ParamServer {
    /// The node's parameters from what the ROS client library read (params file, `-p`),
    /// starting from the defaults. All values are set first and checked together, so the
    /// order of the file does not matter (a depth range moved up entirely is fine). Unknown
    /// names are errors, except the client library's own and rclcpp's `qos_overrides.*`
    /// (accepted as rclcpp accepts them for a node that did not opt in, and named by
    /// [`ParamServer::ignored_warnings`]). Every value is taken as given by an entry that
    /// names this node ([`ParamServer::from_entries`] tells them apart).
    pub fn from_ros<'a>(
        values: impl IntoIterator<Item = (&'a str, ParamValue)>,
    ) -> Result<Self, String> {
        Self::from_entries(
            values
                .into_iter()
                .map(|(name, value)| (name, value, Entry::ThisNode)),
        )
    }

    /// [`ParamServer::from_ros`] with the entries that gave each value: an unknown name
    /// that only entries for any node gave and that is another node's
    /// ([`crate::config::is_other_nodes_key`]) is passed over, as the CLI passes it over,
    /// and named by [`ParamServer::ignored_warnings`].
    pub fn from_entries<'a>(
        values: impl IntoIterator<Item = (&'a str, ParamValue, Entry)>,
    ) -> Result<Self, String> {
        let mut ours = Vec::new();
        let mut client_library = Vec::new();
        let mut qos_overrides = Vec::new();
        let mut other_nodes = Vec::new();
        for (name, value, entry) in values {
            if ROS_RESERVED.contains(&name) {
                // `use_sim_time: "true"` would otherwise leave the node on the wall clock
                // without a word.
                check_client_library_value(name, &value)?;
                client_library.push((name.to_owned(), value));
            } else if name
                .strip_prefix(QOS_OVERRIDES)
                .is_some_and(|rest| rest.starts_with('.'))
            {
                qos_overrides.push(name.to_owned());
            } else if entry == Entry::AnyNode && crate::config::is_other_nodes_key(name) {
                other_nodes.push(name.to_owned());
            } else {
                ours.push((name.to_owned(), value));
            }
        }
        // Declared by every ROS node, given or not (rclcpp's default).
        if !client_library
            .iter()
            .any(|(name, _)| name == "use_sim_time")
        {
            client_library.push(("use_sim_time".to_owned(), ParamValue::Bool(false)));
        }
        Ok(ParamServer {
            params: with_values(&Params::default(), &ours)?,
            client_library,
            qos_overrides,
            other_nodes,
        })
    }

    /// Warnings naming the start-up values passed over: `qos_overrides.*` parameters,
    /// which change nothing here (rclcpp reads them only for publishers and subscriptions
    /// created with `QosOverridingOptions`), and other nodes' keys.
    pub fn ignored_warnings(&self) -> Vec<String> {
        let qos = self.qos_overrides.first().map(|first| {
            let more = match self.qos_overrides.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            format!(
                "`{first}`{more} ignored: this node takes no qos_overrides; set \
                 qos.input_reliability (camera subscriptions) and qos.output_reliability \
                 (outputs) instead"
            )
        });
        qos.into_iter()
            .chain(crate::config::other_nodes_keys_warning(&self.other_nodes))
            .collect()
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Every parameter name: the params file's, then the client library's that were set.
    pub fn names(&self) -> Vec<String> {
        self.all().into_iter().map(|(name, _)| name).collect()
    }

    fn all(&self) -> Vec<(String, ParamValue)> {
        let mut all = declared(&self.params);
        all.extend(self.client_library.iter().cloned());
        all
    }

    /// `get_parameters`: the value of `name`, `None` when there is no such parameter.
    pub fn get(&self, name: &str) -> Option<ParamValue> {
        self.all()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// `describe_parameters` for one name: the comment above its key in
    /// config/params.yaml, for those read at start-up only that it is, and the range of
    /// numbers that have one.
    pub fn describe(&self, name: &str) -> Descriptor {
        let read_only = is_read_only(name);
        let mut description = match name {
            "use_sim_time" => "true: the node's clock follows /clock (a bag played with \
                               --clock); false: the system clock. Settable while it runs."
                .to_owned(),
            _ => descriptions().get(name).cloned().unwrap_or_default(),
        };
        if read_only {
            if !description.is_empty() {
                description.push(' ');
            }
            description.push_str("(Only taken at start-up: restart the node to change it.)");
        }
        Descriptor {
            name: name.to_owned(),
            type_id: self
                .get(name)
                .map_or(parameter_type::NOT_SET, |v| v.type_id()),
            description,
            read_only,
            integer_range: crate::config::integer_range(name),
            float_range: crate::config::float_range(name),
        }
    }

    /// `list_parameters`: the names under any of `prefixes` (all when empty) at most
    /// `depth` levels deep ([`LIST_DEPTH_RECURSIVE`]: any depth), and their prefixes.
    pub fn list(&self, prefixes: &[String], depth: u64) -> (Vec<String>, Vec<String>) {
        let deep_enough = |rest: &str| {
            depth == LIST_DEPTH_RECURSIVE || (rest.matches('.').count() as u64) < depth
        };
        let mut names = Vec::new();
        let mut found_prefixes: Vec<String> = Vec::new();
        for name in self.names() {
            let listed = if prefixes.is_empty() {
                deep_enough(&name)
            } else {
                // As rclcpp: the rest after the prefix keeps its leading separator.
                prefixes.iter().any(|prefix| {
                    name == *prefix
                        || name
                            .strip_prefix(prefix.as_str())
                            .filter(|rest| rest.starts_with('.'))
                            .is_some_and(deep_enough)
                })
            };
            if !listed {
                continue;
            }
            if let Some((prefix, _)) = name.rsplit_once('.') {
                if !found_prefixes.iter().any(|p| p == prefix) {
                    found_prefixes.push(prefix.to_owned());
                }
            }
            names.push(name);
        }
        (names, found_prefixes)
    }

    /// `set_parameters_atomically`: all values or none. The request is refused when any
    /// name is unknown or read-only, any value has the wrong type, or the resulting
    /// parameters are invalid together; on success returns the names that changed.
    pub fn set_atomically(
        &mut self,
        request: &[(String, ParamValue)],
    ) -> Result<Vec<String>, String> {
        for (name, _) in request {
            check_runtime_change(name)?;
        }
        // Set together, a later value of a name would hide an earlier one that is invalid.
        if let Some(name) = named_twice(request) {
            return Err(format!(
                "`{name}` is given more than once in one atomic request"
            ));
        }
        let (client_library, ours): (Vec<_>, Vec<_>) = request
            .iter()
            .cloned()
            .partition(|(name, _)| CLIENT_LIBRARY_LIVE.contains(&name.as_str()));
        for (name, value) in &client_library {
            check_client_library_value(name, value)?;
        }
        let updated = with_values(&self.params, &ours)?;
        let before = self.clone();
        self.params = updated;
        for (name, value) in client_library {
            match self.client_library.iter_mut().find(|(n, _)| *n == name) {
                Some((_, old)) => *old = value,
                None => self.client_library.push((name, value)),
            }
        }
        Ok(self.changed_since(&before))
    }

    /// The names whose values differ from those in `before`.
    fn changed_since(&self, before: &ParamServer) -> Vec<String> {
        let mut names = changed(&before.params, &self.params);
        names.extend(
            self.client_library
                .iter()
                .filter(|(name, value)| before.get(name).as_ref() != Some(value))
                .map(|(name, _)| name.clone()),
        );
        names
    }

    /// `set_parameters`: one result per value. Values refused on their own (read-only,
    /// unknown, wrong type) are left out; the others are set together when they leave
    /// valid parameters (so `ros2 param load` of a whole file moves a range in one go even
    /// though the file also holds read-only keys). Otherwise each is set alone, in order,
    /// against the parameters as the earlier ones left them, as ROS defines this service:
    /// the valid ones take effect, the others are refused with their reason and change
    /// nothing.
    pub fn set_each(&mut self, request: &[(String, ParamValue)]) -> SetOutcome {
        let before = self.clone();
        let mut results: Vec<Result<(), String>> = request
            .iter()
            .map(|(name, value)| self.check_alone(name, value))
            .collect();
        let settable: Vec<(String, ParamValue)> = request
            .iter()
            .zip(&results)
            .filter(|(_, checked)| checked.is_ok())
            .map(|(one, _)| one.clone())
            .collect();
        // A name given twice is set value by value, in order, as ROS applies them: each
        // value checked (together, the last would hide an invalid earlier one).
        if named_twice(&settable).is_some() || self.set_atomically(&settable).is_err() {
            for (one, result) in request.iter().zip(&mut results) {
                if result.is_ok() {
                    *result = self.set_atomically(std::slice::from_ref(one)).map(|_| ());
                }
            }
        }
        SetOutcome {
            results,
            changed: self.changed_since(&before),
        }
    }

    /// Whether `name` may be set to a value of this type at all, whatever the others.
    fn check_alone(&self, name: &str, value: &ParamValue) -> Result<(), String> {
        check_runtime_change(name)?;
        if CLIENT_LIBRARY_LIVE.contains(&name) {
            return check_client_library_value(name, value);
        }
        let mut tree = serde_yaml::to_value(&self.params).expect("Params serialise to YAML");
        set_in_tree(&mut tree, name, value)
    }
}

/// A name the request gives more than once, if any.
fn named_twice(request: &[(String, ParamValue)]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    request
        .iter()
        .map(|(name, _)| name.as_str())
        .find(|name| !seen.insert(*name))
}

/// A parameter that a set changed, with the value it was set to.
pub type Change = (String, ParamValue);

/// Told of each set that changed something, while the set holds the lock: in the order
/// the sets were made, with the values each made (`/parameter_events`).
type Announce = Box<dyn Fn(Vec<Change>) + Send + Sync>;

/// The parameters of a running node, shared by the parameter services (which change them)
/// and the inference thread (which picks changes up between frames).
pub struct LiveParams {
    /// The server and a version bumped on every change, under one lock so a reader sees a
    /// consistent pair.
    inner: Mutex<(ParamServer, u64)>,
    announce: OnceLock<Announce>,
}

impl std::fmt::Debug for LiveParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveParams")
            .field("inner", &self.inner)
            .field("announced", &self.announce.get().is_some())
            .finish()
    }
}

impl LiveParams {
    pub fn new(server: ParamServer) -> Self {
        LiveParams {
            inner: Mutex::new((server, 0)),
            announce: OnceLock::new(),
        }
    }

    /// From now on every set that changes something calls `announce` with the changed
    /// parameters and their new values, under the lock (so it must not block or set
    /// parameters). Once only: false, and `announce` dropped, if one is set already.
    pub fn announce_changes(&self, announce: impl Fn(Vec<Change>) + Send + Sync + 'static) -> bool {
        self.announce.set(Box::new(announce)).is_ok()
    }

    /// Bumps the version and announces `changed` (names) with their values now.
    fn changed(&self, inner: &mut (ParamServer, u64), changed: &[String]) {
        if changed.is_empty() {
            return;
        }
        inner.1 += 1;
        if let Some(announce) = self.announce.get() {
            announce(
                changed
                    .iter()
                    .filter_map(|name| Some((name.clone(), inner.0.get(name)?)))
                    .collect(),
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, (ParamServer, u64)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the read-only services (get, list, describe).
    pub fn read<T>(&self, f: impl FnOnce(&ParamServer) -> T) -> T {
        f(&self.lock().0)
    }

    /// The current parameters and their version.
    pub fn snapshot(&self) -> (u64, Params) {
        let inner = self.lock();
        (inner.1, inner.0.params().clone())
    }

    pub fn params(&self) -> Params {
        self.lock().0.params().clone()
    }

    /// [`ParamServer::set_each`], bumping the version and announcing the change when
    /// something changed.
    pub fn set_each(&self, request: &[(String, ParamValue)]) -> SetOutcome {
        let mut inner = self.lock();
        let outcome = inner.0.set_each(request);
        self.changed(&mut inner, &outcome.changed);
        outcome
    }

    /// [`ParamServer::set_atomically`], bumping the version and announcing the change when
    /// something changed.
    pub fn set_atomically(&self, request: &[(String, ParamValue)]) -> Result<Vec<String>, String> {
        let mut inner = self.lock();
        let changed = inner.0.set_atomically(request)?;
        self.changed(&mut inner, &changed);
        Ok(changed)
    }
}

fn is_read_only(name: &str) -> bool {
    RESTART_ONLY.contains(&name)
        || (ROS_RESERVED.contains(&name) && !CLIENT_LIBRARY_LIVE.contains(&name))
}

/// The client library's parameters are bools (rclcpp refuses any other type).
fn check_client_library_value(name: &str, value: &ParamValue) -> Result<(), String> {
    match value {
        ParamValue::Bool(_) => Ok(()),
        other => Err(format!(
            "`{name}` {}",
            reserved_type_error(other.type_name())
        )),
    }
}

/// Checks that a running node may change `name`.
fn check_runtime_change(name: &str) -> Result<(), String> {
    if is_read_only(name) {
        return Err(format!(
            "`{name}` only takes effect at start-up; restart the node to change it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Reliability};

    fn server() -> ParamServer {
        ParamServer::from_ros([("use_sim_time", ParamValue::Bool(true))]).unwrap()
    }

    fn req(values: &[(&str, ParamValue)]) -> Vec<(String, ParamValue)> {
        values
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn declared_names_are_dotted_and_typed() {
        let names: Vec<(String, ParamValue)> = declared(&Params::default());
        let get = |n: &str| names.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("mode"), Some(ParamValue::String("aleatoric".into())));
        assert_eq!(get("mc.samples"), Some(ParamValue::Integer(50)));
        assert_eq!(get("colormap.depth_max_m"), Some(ParamValue::Double(50.0)));
        assert_eq!(
            get("qos.input_reliability"),
            Some(ParamValue::String("best_effort".into()))
        );
        assert_eq!(
            get("diagnostics.latency_warn_ms"),
            Some(ParamValue::Double(1000.0))
        );
        assert!(names
            .iter()
            .all(|(k, _)| !k.is_empty() && !k.starts_with('.')));
        for name in RESTART_ONLY {
            assert!(get(name).is_some(), "{name} is not a parameter");
        }
    }

    #[test]
    fn single_sets_apply_and_invalid_ones_are_refused_with_a_reason() {
        let mut s = server();
        let mut set = |name: &str, value: ParamValue| {
            let outcome = s.set_each(&req(&[(name, value)]));
            assert_eq!(outcome.results.len(), 1);
            outcome.results[0].clone().map(|()| outcome.changed)
        };
        assert_eq!(
            set("mode", ParamValue::String("mc".into())),
            Ok(vec!["mode".to_owned()])
        );
        assert_eq!(
            set("mc.samples", ParamValue::Integer(12)),
            Ok(vec!["mc.samples".to_owned()])
        );
        assert_eq!(
            set(
                "qos.output_reliability",
                ParamValue::String("best_effort".into())
            ),
            Ok(vec!["qos.output_reliability".to_owned()])
        );
        // The same value again changes nothing.
        assert_eq!(set("mc.samples", ParamValue::Integer(12)), Ok(vec![]));

        let reason = set("mc.samples", ParamValue::Integer(1)).unwrap_err();
        assert!(
            reason.contains("mc.samples") && reason.contains("at least 2"),
            "{reason}"
        );
        let reason = set("mode", ParamValue::String("turbo".into())).unwrap_err();
        assert!(
            reason.contains("mode") && reason.contains("aleatoric"),
            "{reason}"
        );
        let reason = set("colormap.depth_max_m", ParamValue::Integer(80)).unwrap_err();
        assert!(
            reason.contains("double") && reason.contains("1.0"),
            "{reason}"
        );
        let reason = set("mc.sample", ParamValue::Integer(3)).unwrap_err();
        assert!(reason.contains("unknown parameter `mc.sample`"), "{reason}");
        let reason = set("mc", ParamValue::Integer(3)).unwrap_err();
        assert!(reason.contains("group"), "{reason}");
        let reason = set("mc.samples", ParamValue::Other(7)).unwrap_err();
        assert!(
            reason.contains("`mc.samples` has type integer, not integer array"),
            "{reason}"
        );
        // Nothing refused took effect.
        assert_eq!(s.params().mode, Mode::Mc);
        assert_eq!(s.params().mc.samples, 12);
        assert_eq!(s.params().colormap.depth_max_m, 50.0);
        assert_eq!(s.params().qos.output_reliability, Reliability::BestEffort);
    }

    #[test]
    fn restart_only_and_client_library_parameters_are_read_only_at_runtime() {
        let mut s = server();
        let client_library = ROS_RESERVED
            .iter()
            .filter(|name| !CLIENT_LIBRARY_LIVE.contains(name));
        for name in RESTART_ONLY.iter().chain(client_library) {
            let value = s.get(name).unwrap_or(ParamValue::Bool(false));
            let reason = s
                .set_atomically(&req(&[(name, value.clone())]))
                .unwrap_err();
            assert!(reason.contains("restart"), "{reason}");
            let outcome = s.set_each(&req(&[
                ("mode", ParamValue::String("mc".into())),
                (name, value),
            ]));
            assert!(outcome.results[1].as_ref().unwrap_err().contains("restart"));
            assert!(s.describe(name).read_only, "{name}");
        }
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(true)));
        for name in [
            "mode",
            "mc.samples",
            "colormap.depth_max_m",
            "qos.input_reliability",
        ] {
            assert!(!s.describe(name).read_only, "{name}");
        }
    }

    /// As in rclcpp, `use_sim_time` moves a running node to `/clock` and back: a bool only,
    /// alone or with the node's own parameters, announced when it changes.
    #[test]
    fn use_sim_time_changes_at_runtime() {
        let mut s = server(); // started with use_sim_time true
        let described = s.describe("use_sim_time");
        assert!(!described.read_only);
        assert!(described.description.contains("Settable while it runs"));
        let changed = s
            .set_atomically(&req(&[
                ("use_sim_time", ParamValue::Bool(false)),
                ("mode", ParamValue::String("mc".into())),
            ]))
            .unwrap();
        assert_eq!(changed, ["mode", "use_sim_time"]);
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(false)));
        // The same value again changes nothing.
        let outcome = s.set_each(&req(&[("use_sim_time", ParamValue::Bool(false))]));
        assert_eq!((outcome.results, outcome.changed), (vec![Ok(())], vec![]));
        let outcome = s.set_each(&req(&[
            ("use_sim_time", ParamValue::String("true".into())),
            ("mc.samples", ParamValue::Integer(7)),
            ("use_sim_time", ParamValue::Bool(true)),
        ]));
        assert_eq!(
            outcome.results[0].as_ref().unwrap_err(),
            "`use_sim_time` has type bool, not string (write true or false, unquoted)"
        );
        assert_eq!(outcome.results[1..], [Ok(()), Ok(())]);
        assert_eq!(outcome.changed, ["mc.samples", "use_sim_time"]);
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(true)));
        // Refused atomically with the rest of its request.
        let e = s
            .set_atomically(&req(&[
                ("use_sim_time", ParamValue::Integer(0)),
                ("mode", ParamValue::String("moments".into())),
            ]))
            .unwrap_err();
        assert!(e.contains("has type bool, not integer"), "{e}");
        let e = s
            .set_atomically(&req(&[
                ("use_sim_time", ParamValue::Bool(false)),
                ("mode", ParamValue::String("turbo".into())),
            ]))
            .unwrap_err();
        assert!(e.contains("turbo"), "{e}");
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(true)));
        assert_eq!((s.params().mode, s.params().mc.samples), (Mode::Mc, 7));
        // A node started without it declared it false; set, it is announced by name.
        let mut plain = ParamServer::from_ros([("mode", ParamValue::String("mc".into()))]).unwrap();
        let changed = plain
            .set_atomically(&req(&[("use_sim_time", ParamValue::Bool(true))]))
            .unwrap();
        assert_eq!(changed, ["use_sim_time"]);
        assert_eq!(
            plain
                .names()
                .iter()
                .filter(|n| *n == "use_sim_time")
                .count(),
            1
        );
    }

    /// Issue 9: a range moved entirely above the old one was refused, because each value
    /// was checked alone against the values before the request.
    #[test]
    fn several_values_in_one_request_are_checked_together_in_either_order() {
        let up = [
            ("colormap.depth_min_m", ParamValue::Double(60.0)),
            ("colormap.depth_max_m", ParamValue::Double(100.0)),
        ];
        for order in [up.clone(), [up[1].clone(), up[0].clone()]] {
            let mut s = server();
            let outcome = s.set_each(&req(&order));
            assert_eq!(outcome.results, vec![Ok(()), Ok(())]);
            assert_eq!(outcome.changed.len(), 2);
            assert_eq!(
                (
                    s.params().colormap.depth_min_m,
                    s.params().colormap.depth_max_m
                ),
                (60.0, 100.0)
            );

            let mut s = server();
            let changed = s.set_atomically(&req(&order)).unwrap();
            assert_eq!(changed, ["colormap.depth_min_m", "colormap.depth_max_m"]);
            assert_eq!(
                (
                    s.params().colormap.depth_min_m,
                    s.params().colormap.depth_max_m
                ),
                (60.0, 100.0)
            );
        }
        let mut s = server();
        s.set_atomically(&req(&[
            ("mc.samples", ParamValue::Integer(4)),
            ("mode", ParamValue::String("mc".into())),
        ]))
        .unwrap();
        assert_eq!((s.params().mode, s.params().mc.samples), (Mode::Mc, 4));
    }

    #[test]
    fn a_whole_file_with_read_only_keys_still_moves_a_range_in_one_request() {
        let mut s = server();
        let mut file = declared(&Params::default());
        for (name, value) in &mut file {
            match name.as_str() {
                "colormap.depth_max_m" => *value = ParamValue::Double(100.0),
                "colormap.depth_min_m" => *value = ParamValue::Double(60.0),
                "model" => *value = ParamValue::String("/elsewhere".into()),
                _ => {}
            }
        }
        let outcome = s.set_each(&file);
        for ((name, _), result) in file.iter().zip(&outcome.results) {
            if RESTART_ONLY.contains(&name.as_str()) {
                assert!(result.as_ref().unwrap_err().contains("restart"), "{name}");
            } else {
                assert_eq!(result, &Ok(()), "{name}");
            }
        }
        assert_eq!(
            outcome.changed,
            ["colormap.depth_min_m", "colormap.depth_max_m"]
        );
        assert_eq!(s.params().model, "");
    }

    #[test]
    fn an_invalid_atomic_request_changes_nothing_and_set_each_applies_the_valid_values() {
        let bad = req(&[
            ("mode", ParamValue::String("mc".into())),
            ("colormap.depth_min_m", ParamValue::Double(60.0)),
            ("mc.samples", ParamValue::Integer(1)),
        ]);
        let mut s = server();
        let reason = s.set_atomically(&bad).unwrap_err();
        assert!(reason.contains("mc.samples"), "{reason}");
        assert_eq!(s, server());

        let outcome = s.set_each(&bad);
        assert_eq!(outcome.results[0], Ok(()));
        // Refused with both ends of the range named (the one set is the minimum).
        assert!(outcome.results[1]
            .as_ref()
            .unwrap_err()
            .contains("60 must be below colormap.depth_max_m (50)"));
        assert!(outcome.results[2]
            .as_ref()
            .unwrap_err()
            .contains("at least 2"));
        assert_eq!(outcome.changed, ["mode"]);
        assert_eq!(s.params().mode, Mode::Mc);
        assert_eq!(s.params().colormap, Params::default().colormap);
        assert_eq!(s.params().mc.samples, 50);
    }

    /// A name given twice: each value checked in order (set_parameters), refused as a
    /// whole (atomically); a later value does not hide an invalid earlier one.
    #[test]
    fn a_name_given_twice_is_checked_value_by_value() {
        let twice = req(&[
            ("mode", ParamValue::String("turbo".into())),
            ("mode", ParamValue::String("mc".into())),
        ]);
        let mut s = server();
        let outcome = s.set_each(&twice);
        assert!(outcome.results[0].is_err(), "{:?}", outcome.results);
        assert_eq!(outcome.results[1], Ok(()));
        assert_eq!(s.params().mode, Mode::Mc);
        assert_eq!(outcome.changed, ["mode"]);
        let mut s = server();
        let reason = s.set_atomically(&twice).unwrap_err();
        assert!(
            reason.contains("`mode` is given more than once"),
            "{reason}"
        );
        assert_eq!(s, server());
    }

    #[test]
    fn overrides_named_for_this_node_anywhere_or_by_p_are_its_own() {
        let int = |n: &str, v: i64| (n.to_owned(), ParamValue::Integer(v));
        let entries = |first: &str, second: &str| {
            vec![
                (first.to_owned(), vec![int("a", 1), int("b", 1)]),
                (second.to_owned(), vec![int("a", 2), int("c", 2)]),
            ]
        };
        let tags = |merged: Vec<(String, ParamValue, Entry)>| {
            merged
                .into_iter()
                .map(|(n, v, e)| (n, v, e == Entry::ThisNode))
                .collect::<Vec<_>>()
        };
        let v = |n: &str, x: i64, this: bool| (n.to_owned(), ParamValue::Integer(x), this);
        // The later value wins; named by this node's entry, before or after, it is its own.
        assert_eq!(
            tags(merge_overrides(
                entries("/**", "/front/bayes_perception"),
                &[]
            )),
            [v("b", 1, false), v("a", 2, true), v("c", 2, true)]
        );
        assert_eq!(
            tags(merge_overrides(
                entries("/front/bayes_perception", "/front/*"),
                &[]
            )),
            [v("b", 1, true), v("a", 2, true), v("c", 2, false)]
        );
        // -p values are filed under /** by rcl: the command line names them.
        assert_eq!(
            tags(merge_overrides(entries("/**", "/**"), &["c".to_owned()])),
            [v("b", 1, false), v("a", 2, false), v("c", 2, true)]
        );
        let line = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            command_line_param_names(&line(
                "node -p x:=1 --ros-args -r a:=b -p mode:=mc --param bayes_perception:seed:=3 \
                 --params-file f.yaml -- -p after:=1 --ros-args -p last:=2 -p"
            )),
            ["mode", "seed", "last"]
        );
    }

    #[test]
    fn another_nodes_keys_from_entries_for_any_node_are_passed_over() {
        let any = |name: &'static str| (name, ParamValue::Integer(640), Entry::AnyNode);
        let s = ParamServer::from_entries([
            any("image_width"),
            ("mode", ParamValue::String("mc".into()), Entry::AnyNode),
        ])
        .unwrap();
        assert_eq!(s.params().mode, crate::config::Mode::Mc);
        assert_eq!(s.get("image_width"), None);
        let warnings = s.ignored_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("`image_width` passed over:"),
            "{warnings:?}"
        );
        // Given by this node's entry, or like a name of ours: refused.
        let e =
            ParamServer::from_entries([("image_width", ParamValue::Integer(640), Entry::ThisNode)])
                .unwrap_err();
        assert_eq!(e, "unknown parameter `image_width`");
        let e = ParamServer::from_entries([any("mc.sample")]).unwrap_err();
        assert!(
            e.contains("unknown parameter `mc.sample` (did you mean `mc.samples`?)"),
            "{e}"
        );
        let e = ParamServer::from_entries([any("mdoe")]).unwrap_err();
        assert!(e.contains("did you mean `mode`?"), "{e}");
    }

    #[test]
    fn start_up_values_from_ros() {
        let values = [
            ("use_sim_time", ParamValue::Bool(true)),
            ("model", ParamValue::String("/opt/models/camvid".into())),
            ("mc.samples", ParamValue::Integer(20)),
            (
                "qos_overrides./image.subscription.reliability",
                ParamValue::String("reliable".into()),
            ),
        ];
        let s = ParamServer::from_ros(values.iter().map(|(k, v)| (*k, v.clone()))).unwrap();
        assert_eq!(s.params().model, "/opt/models/camvid");
        assert_eq!(s.params().mc.samples, 20);
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(true)));
        assert_eq!(s.get("qos_overrides./image.subscription.reliability"), None);
        let [warning] = &s.ignored_warnings()[..] else {
            panic!("one warning: {:?}", s.ignored_warnings());
        };
        assert!(
            warning.starts_with("`qos_overrides./image.subscription.reliability` ignored:"),
            "{warning}"
        );
        assert!(warning.contains("qos.input_reliability"), "{warning}");
        let two = ParamServer::from_ros([
            ("qos_overrides./a.publisher.depth", ParamValue::Integer(3)),
            ("qos_overrides./b.publisher.depth", ParamValue::Integer(3)),
        ])
        .unwrap();
        assert!(two.ignored_warnings()[0]
            .starts_with("`qos_overrides./a.publisher.depth` and 1 more ignored:"));
        assert!(ParamServer::from_ros([])
            .unwrap()
            .ignored_warnings()
            .is_empty());
        let e = ParamServer::from_ros([("mcsamples", ParamValue::Integer(3))]).unwrap_err();
        assert!(
            e.contains("unknown parameter `mcsamples` (did you mean `mc.samples`?)"),
            "{e}"
        );
        let e = ParamServer::from_ros([("mdoe", ParamValue::Integer(3))]).unwrap_err();
        assert!(e.ends_with("(did you mean `mode`?)"), "{e}");
        let e = ParamServer::from_ros([("frobnicate", ParamValue::Integer(3))]).unwrap_err();
        assert_eq!(e, "unknown parameter `frobnicate`");
        assert_eq!(strsim::levenshtein("kitten", "sitting"), 3);
        // The client library's own are bools, as rclcpp has them.
        for value in [ParamValue::String("true".into()), ParamValue::Integer(1)] {
            let e = ParamServer::from_ros([("use_sim_time", value)]).unwrap_err();
            assert!(e.starts_with("`use_sim_time` has type bool, not "), "{e}");
        }
        // Checked as a whole: a depth range above the default maximum, minimum first.
        let s = ParamServer::from_ros([
            ("colormap.depth_min_m", ParamValue::Double(60.0)),
            ("colormap.depth_max_m", ParamValue::Double(100.0)),
        ])
        .unwrap();
        assert_eq!(
            (
                s.params().colormap.depth_min_m,
                s.params().colormap.depth_max_m
            ),
            (60.0, 100.0)
        );
        let e = ParamServer::from_ros([
            ("mode", ParamValue::String("mc".into())),
            ("mc.samples", ParamValue::Integer(1)),
        ])
        .unwrap_err();
        assert!(e.contains("mc.samples"), "{e}");
        let e = ParamServer::from_ros([("device", ParamValue::String("gpu".into()))]).unwrap_err();
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    }

    #[test]
    fn every_parameter_is_described_from_the_params_file_and_use_sim_time_is_declared() {
        let s = ParamServer::from_ros([]).unwrap();
        for (name, _) in declared(&Params::default()) {
            let d = descriptions().get(&name).map_or("", |d| d.as_str());
            assert!(
                d.len() > 10,
                "{name} has no comment in config/params.yaml: `{d}`"
            );
        }
        assert!(s
            .describe("mc.samples")
            .description
            .starts_with("T, stochastic forward passes"));
        // Ranges where a closed one says what is allowed: the same the checks use.
        assert_eq!(s.describe("points.stride").integer_range, Some((1, 64)));
        assert_eq!(
            s.describe("diagnostics.drop_warn_fraction").float_range,
            Some((-1.0, 1.0))
        );
        assert_eq!(s.describe("mc.batch_size").integer_range, None);
        let mut over = s.params().clone();
        over.points.stride = 65;
        assert!(over.validate("test").is_err());
        over.points.stride = 64;
        assert!(over.validate("test").is_ok());
        assert!(s
            .describe("device")
            .description
            .contains("restart the node"));
        assert_eq!(s.get("use_sim_time"), Some(ParamValue::Bool(false)));
        assert!(s.names().contains(&"use_sim_time".to_owned()));
    }

    #[test]
    fn every_declared_parameter_round_trips_and_reads_back() {
        let mut s = server();
        for (name, value) in declared(&Params::default()) {
            assert_eq!(s.get(&name), Some(value.clone()), "{name}");
            assert_eq!(s.describe(&name).type_id, value.type_id(), "{name}");
            if !RESTART_ONLY.contains(&name.as_str()) {
                assert_eq!(
                    s.set_atomically(&req(&[(&name, value)])),
                    Ok(vec![]),
                    "{name}"
                );
            }
        }
        assert_eq!(s.params(), &Params::default());
        assert_eq!(s.get("no.such"), None);
        assert_eq!(s.describe("no.such").type_id, 0);
        let types = [
            ("mode", 4),
            ("mc.samples", 2),
            ("colormap.depth_max_m", 3),
            ("use_sim_time", 1),
        ];
        for (name, id) in types {
            assert_eq!(s.describe(name).type_id, id, "{name}");
        }
    }

    /// Each change is announced with the values it set, in the order the sets were made,
    /// however soon another set follows (the announcement read the values later: two sets
    /// in quick succession were both announced with the second one's value).
    #[test]
    fn live_params_announce_each_change_with_its_own_values() {
        let live = LiveParams::new(server());
        let heard = std::sync::Arc::new(Mutex::new(Vec::new()));
        let to = heard.clone();
        assert!(live.announce_changes(move |c| to.lock().unwrap().push(c)));
        assert!(!live.announce_changes(|_| {}), "one announcer");
        let min = "colormap.depth_min_m";
        live.set_each(&req(&[(min, ParamValue::Double(20.0))]));
        live.set_atomically(&req(&[(min, ParamValue::Double(0.0))]))
            .unwrap();
        live.set_each(&req(&[(min, ParamValue::Double(0.0))]));
        live.set_each(&req(&[("mode", ParamValue::String("turbo".into()))]));
        live.set_atomically(&req(&[
            ("mode", ParamValue::String("mc".into())),
            ("mc.samples", ParamValue::Integer(7)),
        ]))
        .unwrap();
        let change = |name: &str, value: ParamValue| (name.to_owned(), value);
        assert_eq!(
            *heard.lock().unwrap(),
            vec![
                vec![change(min, ParamValue::Double(20.0))],
                vec![change(min, ParamValue::Double(0.0))],
                vec![
                    change("mode", ParamValue::String("mc".into())),
                    change("mc.samples", ParamValue::Integer(7)),
                ],
            ],
            "unchanged and refused sets are not announced"
        );
    }

    #[test]
    fn live_params_bump_their_version_only_on_change() {
        let live = LiveParams::new(server());
        let (v0, p0) = live.snapshot();
        assert_eq!(p0, *server().params());
        live.set_each(&req(&[("mode", ParamValue::String("aleatoric".into()))]));
        assert_eq!(live.snapshot().0, v0, "same value: no new version");
        live.set_each(&req(&[("mode", ParamValue::String("turbo".into()))]));
        assert_eq!(live.snapshot().0, v0, "refused: no new version");
        live.set_atomically(&req(&[("mode", ParamValue::String("mc".into()))]))
            .unwrap();
        let (v1, p1) = live.snapshot();
        assert!(v1 > v0);
        assert_eq!(p1.mode, Mode::Mc);
        assert_eq!(
            live.read(|s| s.get("mode")),
            Some(ParamValue::String("mc".into()))
        );
    }

    #[test]
    fn list_by_prefix_and_depth() {
        let s = server();
        let (all, prefixes) = s.list(&[], LIST_DEPTH_RECURSIVE);
        assert_eq!(all, s.names());
        assert!(all.contains(&"use_sim_time".to_owned()));
        assert!(prefixes.contains(&"mc".to_owned()) && prefixes.contains(&"colormap".to_owned()));
        let (top, _) = s.list(&[], 1);
        assert!(top.contains(&"mode".to_owned()) && !top.contains(&"mc.samples".to_owned()));
        let (mc, prefixes) = s.list(&["mc".to_owned()], LIST_DEPTH_RECURSIVE);
        assert_eq!(mc, ["mc.samples", "mc.batch_size", "mc.max_gpu_memory_mb"]);
        assert_eq!(prefixes, ["mc"]);
        // rclcpp counts the separator after the prefix: depth 2 reaches `mc.samples`.
        assert!(s.list(&["mc".to_owned()], 1).0.is_empty());
        assert_eq!(s.list(&["mc".to_owned()], 2).0, mc);
        let (none, _) = s.list(&["m".to_owned()], LIST_DEPTH_RECURSIVE);
        assert!(none.is_empty(), "{none:?}");
    }
}
