//! rosbag2's `offered_qos_profiles`: the QoS each publisher of a topic offered while it was
//! recorded, as YAML text (a list of profiles). `ros2 bag play` offers them again, so a
//! latched topic (`/tf_static`, durability transient_local) reaches late subscribers of
//! the replay only if its profiles are kept. rosbag2 wrote the policies as numbers (rmw's
//! enums) up to metadata version 8 and as names (`transient_local`) from version 9; a bag
//! of version 5, as we write, is read with numbers.

use serde_yaml::Value;

/// rmw's enum values of each named policy, as rosbag2 wrote them before version 9.
const POLICIES: [(&str, &[(&str, i64)]); 4] = [
    (
        "history",
        &[
            ("system_default", 0),
            ("keep_last", 1),
            ("keep_all", 2),
            ("unknown", 3),
        ],
    ),
    (
        "reliability",
        &[
            ("system_default", 0),
            ("reliable", 1),
            ("best_effort", 2),
            ("unknown", 3),
            ("best_available", 4),
        ],
    ),
    (
        "durability",
        &[
            ("system_default", 0),
            ("transient_local", 1),
            ("volatile", 2),
            ("unknown", 3),
            ("best_available", 4),
        ],
    ),
    (
        "liveliness",
        &[
            ("system_default", 0),
            ("automatic", 1),
            ("manual_by_node", 2),
            ("manual_by_topic", 3),
            ("unknown", 4),
            ("best_available", 5),
        ],
    ),
];

/// rmw's `RMW_QOS_POLICY_DURABILITY_TRANSIENT_LOCAL`.
const TRANSIENT_LOCAL: i64 = 1;

/// rmw's `RMW_QOS_POLICY_HISTORY_KEEP_ALL`.
const KEEP_ALL: i64 = 2;

/// The profiles of `text` with each named policy as its number (how a bag of metadata
/// version 5 is read); `None` when `text` is not a list of profiles or names a policy
/// value rmw does not have. Empty text (no profiles recorded) stays empty.
pub fn as_numbers(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some(String::new());
    }
    let Value::Sequence(mut profiles) = serde_yaml::from_str::<Value>(text).ok()? else {
        return None;
    };
    for profile in &mut profiles {
        let Value::Mapping(profile) = profile else {
            return None;
        };
        for (policy, values) in POLICIES {
            let Some(value) = profile.get_mut(policy) else {
                continue;
            };
            if let Value::String(name) = value {
                let number = values
                    .iter()
                    .find(|(known, _)| name.eq_ignore_ascii_case(known))?
                    .1;
                *value = Value::from(number);
            }
        }
    }
    let text = serde_yaml::to_string(&Value::Sequence(profiles)).ok()?;
    Some(text.trim_end().to_owned())
}

/// The profiles of `text` with their policies as numbers ([`as_numbers`]); `None` when
/// `text` is not a list of profiles (empty text included).
fn numbered_profiles(text: &str) -> Option<Vec<Value>> {
    match serde_yaml::from_str::<Value>(&as_numbers(text)?).ok()? {
        Value::Sequence(profiles) => Some(profiles),
        _ => None,
    }
}

/// Whether a publisher of the topic offered durability transient_local (a latched topic:
/// `/tf_static`, a map, a robot description), by its recorded profiles.
pub fn is_latched(text: &str) -> bool {
    latched_history(text).is_some()
}

/// For a latched topic (a publisher offered durability transient_local), how many of its
/// messages a subscriber that joins late receives: each latched publisher's history depth
/// (at least 1; keep_all: all) summed over them. `None`: not latched.
pub fn latched_history(text: &str) -> Option<usize> {
    let profiles = numbered_profiles(text)?;
    let depths: Vec<usize> = profiles
        .iter()
        .filter(|p| p.get("durability").and_then(Value::as_i64) == Some(TRANSIENT_LOCAL))
        .map(|p| match p.get("history").and_then(Value::as_i64) {
            Some(KEEP_ALL) => usize::MAX,
            _ => p.get("depth").and_then(Value::as_u64).unwrap_or(1).max(1) as usize,
        })
        .collect();
    (!depths.is_empty()).then(|| depths.iter().fold(0usize, |a, &d| a.saturating_add(d)))
}

/// The profiles of several recordings of one topic (MCAP channels, SQLite connections) as
/// one list, in the order given; the first text that is not a list of profiles is
/// returned as it is (so [`summary`] says it is unreadable). Empty texts add nothing.
pub fn merge<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let texts: Vec<&str> = texts.into_iter().filter(|t| !t.trim().is_empty()).collect();
    if texts.len() < 2 {
        return texts.first().map_or_else(String::new, |t| (*t).to_owned());
    }
    let mut all = Vec::new();
    for text in &texts {
        match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Sequence(profiles)) => all.extend(profiles),
            _ => return (*text).to_owned(),
        }
    }
    serde_yaml::to_string(&Value::Sequence(all))
        .map(|text| text.trim_end().to_owned())
        .unwrap_or_default()
}

/// The most distinct profiles [`summary`] lists; more are counted.
const SUMMARY_PROFILES: usize = 4;

/// The QoS a topic was recorded with, in a line for `bag info`: each distinct profile's
/// reliability, durability and history (`reliable, transient_local, keep_last 1`), with
/// the number of publishers that offered it where more than one did (at most
/// four listed). `None` when no profile was recorded; the text is said
/// unreadable when it is not a list of profiles.
pub fn summary(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    let unreadable = || Some("unreadable (not a list of QoS profiles)".to_owned());
    let Some(profiles) = numbered_profiles(text) else {
        return unreadable();
    };
    // The name of a policy's number, or the policy and the number where rmw has no such
    // value.
    let name = |profile: &Value, policy: &str| -> String {
        let Some(number) = profile.get(policy).and_then(Value::as_i64) else {
            return format!("{policy} ?");
        };
        let (_, values) = POLICIES
            .iter()
            .find(|(p, _)| *p == policy)
            .expect("a policy");
        values.iter().find(|(_, n)| *n == number).map_or_else(
            || format!("{policy} {number}"),
            |(known, _)| (*known).to_owned(),
        )
    };
    let mut distinct: Vec<(String, usize)> = Vec::new();
    for profile in &profiles {
        if !profile.is_mapping() {
            return unreadable();
        }
        let history = match name(profile, "history").as_str() {
            "keep_last" => match profile.get("depth").and_then(Value::as_u64) {
                Some(depth) => format!("keep_last {depth}"),
                None => "keep_last".to_owned(),
            },
            other => other.to_owned(),
        };
        let line = format!(
            "{}, {}, {history}",
            name(profile, "reliability"),
            name(profile, "durability")
        );
        match distinct.iter_mut().find(|(known, _)| *known == line) {
            Some((_, publishers)) => *publishers += 1,
            None => distinct.push((line, 1)),
        }
    }
    if distinct.is_empty() {
        return None;
    }
    let more = distinct.len().saturating_sub(SUMMARY_PROFILES);
    let mut shown: Vec<String> = distinct
        .into_iter()
        .take(SUMMARY_PROFILES)
        .map(|(line, publishers)| match publishers {
            1 => line,
            n => format!("{line} ({n} publishers)"),
        })
        .collect();
    if more > 0 {
        shown.push(format!("{more} more profile(s)"));
    }
    Some(shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile as rosbag2 writes it, with the policies given.
    fn profile(durability: &str, reliability: &str) -> String {
        format!(
            "- history: {h}\n  depth: 1\n  reliability: {reliability}\n  durability: {durability}\n  \
             deadline:\n    sec: 2147483647\n    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    \
             nsec: 4294967295\n  liveliness: {l}\n  liveliness_lease_duration:\n    sec: 2147483647\n    \
             nsec: 4294967295\n  avoid_ros_namespace_conventions: false",
            h = if durability.parse::<i64>().is_ok() { "1" } else { "keep_last" },
            l = if durability.parse::<i64>().is_ok() { "1" } else { "automatic" },
        )
    }

    /// Names (metadata version 9) become rmw's numbers (version 8 and before), which stay
    /// as they are; the two forms of one profile agree.
    #[test]
    fn named_policies_become_numbers() {
        let named = profile("transient_local", "reliable");
        let numbers = as_numbers(&named).unwrap();
        let parsed: Value = serde_yaml::from_str(&numbers).unwrap();
        let p = &parsed[0];
        assert_eq!(p["history"], Value::from(1));
        assert_eq!(p["reliability"], Value::from(1));
        assert_eq!(p["durability"], Value::from(1));
        assert_eq!(p["liveliness"], Value::from(1));
        assert_eq!(p["depth"], Value::from(1));
        assert_eq!(p["deadline"]["nsec"], Value::from(4294967295u64));
        let as_numbered = profile("1", "1");
        assert_eq!(as_numbers(&as_numbered).unwrap(), numbers);
        assert_eq!(as_numbers(""), Some(String::new()));
        assert_eq!(as_numbers("not: [a list"), None);
        assert_eq!(as_numbers("a: mapping"), None);
        assert_eq!(as_numbers(&profile("persistent", "reliable")), None);
    }

    /// `bag info`'s line: names or numbers alike, identical publishers counted, distinct
    /// ones listed in the order recorded.
    #[test]
    fn summary_names_each_distinct_profile() {
        let latched = profile("transient_local", "reliable");
        assert_eq!(
            summary(&latched).unwrap(),
            "reliable, transient_local, keep_last 1"
        );
        assert_eq!(
            summary(&profile("1", "1")).unwrap(),
            "reliable, transient_local, keep_last 1"
        );
        let two = format!(
            "{latched}\n{latched}\n{}",
            profile("volatile", "best_effort")
        );
        assert_eq!(
            summary(&two).unwrap(),
            "reliable, transient_local, keep_last 1 (2 publishers); best_effort, volatile, \
             keep_last 1"
        );
        let keep_all = "- history: 2\n  depth: 0\n  reliability: 0\n  durability: 9";
        assert_eq!(
            summary(keep_all).unwrap(),
            "system_default, durability 9, keep_all"
        );
        // Several recordings of one topic: their profiles together.
        let volatile = profile("2", "2");
        let merged = merge([latched.as_str(), "", volatile.as_str(), latched.as_str()]);
        assert_eq!(
            summary(&merged).unwrap(),
            "reliable, transient_local, keep_last 1 (2 publishers); best_effort, volatile, \
             keep_last 1"
        );
        assert_eq!(merge(["", latched.as_str()]), latched);
        assert!(summary(&merge([latched.as_str(), "a: b"]))
            .unwrap()
            .starts_with("unreadable"));
        // Many distinct ones are counted, not listed.
        let many: String = (1..=6)
            .map(|depth| {
                format!("- history: 1\n  depth: {depth}\n  reliability: 1\n  durability: 2\n")
            })
            .collect();
        let line = summary(&many).unwrap();
        assert!(
            line.ends_with("reliable, volatile, keep_last 4; 2 more profile(s)"),
            "{line}"
        );
        assert_eq!(summary(""), None);
        assert_eq!(summary("[]"), None);
        for bad in [
            "not: [a list",
            "a: mapping",
            "- 3",
            "- reliability: sometimes",
        ] {
            assert!(summary(bad).unwrap().starts_with("unreadable"), "{bad}");
        }
    }

    /// Every name rosbag2 writes (version 9) against rmw's enum value (what versions up to
    /// 8 wrote).
    #[test]
    fn every_policy_name_has_rmw_s_number() {
        let expected: [(&str, &[(&str, i64)]); 4] = [
            (
                "history",
                &[
                    ("system_default", 0),
                    ("keep_last", 1),
                    ("keep_all", 2),
                    ("unknown", 3),
                ],
            ),
            (
                "reliability",
                &[
                    ("system_default", 0),
                    ("reliable", 1),
                    ("best_effort", 2),
                    ("unknown", 3),
                    ("best_available", 4),
                ],
            ),
            (
                "durability",
                &[
                    ("system_default", 0),
                    ("transient_local", 1),
                    ("volatile", 2),
                    ("unknown", 3),
                    ("best_available", 4),
                ],
            ),
            (
                "liveliness",
                &[
                    ("system_default", 0),
                    ("automatic", 1),
                    ("manual_by_node", 2),
                    ("manual_by_topic", 3),
                    ("unknown", 4),
                    ("best_available", 5),
                ],
            ),
        ];
        for (policy, values) in expected {
            for (name, number) in values {
                let converted = as_numbers(&format!("- {policy}: {name}")).unwrap();
                let parsed: Value = serde_yaml::from_str(&converted).unwrap();
                assert_eq!(parsed[0][policy], Value::from(*number), "{policy}: {name}");
            }
        }
    }

    #[test]
    fn a_late_subscriber_gets_each_latched_publisher_s_depth() {
        let two = format!(
            "{}\n{}",
            profile("transient_local", "reliable"),
            profile("transient_local", "reliable").replace("depth: 1", "depth: 3")
        );
        assert_eq!(latched_history(&two), Some(4));
        assert_eq!(latched_history(&profile("volatile", "reliable")), None);
        assert_eq!(latched_history("- durability: 1\n  depth: 0"), Some(1));
        let all = "- durability: transient_local\n  history: keep_all\n  depth: 0";
        assert_eq!(latched_history(all), Some(usize::MAX));
        assert_eq!(latched_history(&format!("{all}\n{all}")), Some(usize::MAX));
        assert_eq!(latched_history(""), None);
    }

    #[test]
    fn latched_by_transient_local_durability_of_any_publisher() {
        assert!(is_latched(&profile("transient_local", "reliable")));
        assert!(is_latched(&profile("1", "1")));
        assert!(!is_latched(&profile("volatile", "reliable")));
        assert!(!is_latched(&profile("2", "2")));
        // Two publishers, the second latched.
        let two = format!(
            "{}\n{}",
            profile("volatile", "best_effort"),
            profile("transient_local", "reliable")
        );
        assert!(is_latched(&two));
        assert!(!is_latched(""));
        assert!(!is_latched("garbage: ["));
    }
}
