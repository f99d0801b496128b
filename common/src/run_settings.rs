//! How a project's program runs besides its command line, as taskmaster's programs have it:
//! the signal herzog stops an attempt with, its umask, and whether its stdout and stderr are
//! kept or discarded. Parsed from `hz action`'s flags, checked again by herzog (the wire is
//! input too), applied by kinski.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `hz action --stop-signal`, `--umask`, `--stdout` and `--stderr` set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The signal herzog stops an attempt with (`hz remove`, a stop); `None`: TERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    /// The attempts' file mode creation mask; `None`: kinski's (022).
    #[serde(default, with = "umask_serde", skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Whether each attempt's stdout is kept in its log file or discarded.
    #[serde(default)]
    pub stdout: Sink,
    /// Whether each attempt's stderr is kept in its log file or discarded.
    #[serde(default)]
    pub stderr: Sink,
}

/// A signal, written by name (`USR1`, `SIGUSR1`, any case) or number. Stored and shown by
/// its name without `SIG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(nix::sys::signal::Signal);

impl Signal {
    /// Its number on this system.
    pub fn number(self) -> i32 {
        self.0 as i32
    }

    /// Its name without `SIG`: `TERM`, `USR1`.
    pub fn name(self) -> &'static str {
        let full = self.0.as_str();
        full.strip_prefix("SIG").unwrap_or(full)
    }

    /// Parses `TERM`, `SIGTERM`, `term` or `15`.
    pub fn parse(text: &str) -> Result<Signal, String> {
        let bad =
            || format!("{text:?} is not a signal: give a name (TERM, INT, HUP, USR1, ...) or a number from 1 to 31");
        let trimmed = text.trim();
        if let Ok(number) = trimmed.parse::<i32>() {
            return nix::sys::signal::Signal::try_from(number)
                .map(Signal)
                .map_err(|_| bad());
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        full.parse().map(Signal).map_err(|_| bad())
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i32),
            Name(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Name(name) => name,
        };
        Signal::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a file mode creation mask written in octal: `022`, `0o027`, `7`.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mask) if mask <= 0o777 && !digits.is_empty() => Ok(mask),
        _ => Err(format!(
            "umask {text:?} is not an octal mask from 000 to 777: write e.g. 022"
        )),
    }
}

/// (De)serializes an optional umask as an octal string (`"022"`); a number is read as the
/// mask's value.
pub mod umask_serde {
    use super::*;

    pub fn serialize<S: Serializer>(mask: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mask {
            Some(m) => s.serialize_str(&format!("{m:03o}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(n)) if n <= 0o777 => Ok(Some(n)),
            Some(Raw::Number(n)) => Err(serde::de::Error::custom(format!("umask {n:o} is above 777"))),
            Some(Raw::Text(t)) => parse_umask(&t).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// Where an attempt's stdout or stderr goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// Into its log file in the results folder (`hz logs`).
    #[default]
    Keep,
    /// To /dev/null: no log file.
    Discard,
}

impl Sink {
    pub fn is_keep(&self) -> bool {
        *self == Sink::Keep
    }

    /// `keep` or `discard`.
    pub fn parse(text: &str) -> Result<Sink, String> {
        match text {
            "keep" => Ok(Sink::Keep),
            "discard" => Ok(Sink::Discard),
            _ => Err(format!("{text:?}: expected keep or discard")),
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Keep => "keep",
            Sink::Discard => "discard",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number_and_show_their_name() {
        for text in ["USR1", "usr1", "SIGUSR1", " sigusr1 ", "10"] {
            let s = Signal::parse(text).unwrap();
            assert_eq!((s.name(), s.number()), ("USR1", 10), "{text}");
        }
        assert_eq!(Signal::parse("9").unwrap().name(), "KILL");
        for bad in ["", "TERMINATE", "SIG", "0", "99", "-1", "1.5"] {
            let err = Signal::parse(bad).unwrap_err();
            assert!(err.contains("is not a signal"), "{bad}: {err}");
        }
        let json = serde_json::to_string(&Signal::parse("hup").unwrap()).unwrap();
        assert_eq!(json, "\"HUP\"");
        assert_eq!(serde_json::from_str::<Signal>("\"HUP\"").unwrap().number(), 1);
        assert_eq!(serde_json::from_str::<Signal>("15").unwrap().name(), "TERM");
        assert!(serde_json::from_str::<Signal>("\"NOPE\"").is_err());
    }

    #[test]
    fn umasks_are_octal_up_to_777() {
        assert_eq!(parse_umask("022"), Ok(0o22));
        assert_eq!(parse_umask("0o027"), Ok(0o27));
        assert_eq!(parse_umask("7"), Ok(0o7));
        assert_eq!(parse_umask("777"), Ok(0o777));
        for bad in ["", "0o", "8", "1000", "rwx", "-22"] {
            assert!(parse_umask(bad).unwrap_err().contains("octal mask"), "{bad}");
        }
    }

    #[test]
    fn specs_and_starts_from_before_the_settings_still_read() {
        // A spec stored by an older herzog, and a start from one: every setting defaults.
        let spec: crate::wire::RunSpec = serde_json::from_str(r#"{"program":"wc -l","grace_ms":5}"#).unwrap();
        assert_eq!(spec.settings, Settings::default());
        let mut spec = crate::wire::RunSpec::new("wc -l");
        spec.settings.umask = Some(0o27);
        spec.settings.stop_signal = Some(Signal::parse("INT").unwrap());
        spec.settings.stderr = Sink::Discard;
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains(r#""umask":"027""#) && json.contains(r#""stop_signal":"INT""#),
            "flat in the spec: {json}"
        );
        assert_eq!(serde_json::from_str::<crate::wire::RunSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn sinks_are_keep_or_discard() {
        assert_eq!(Sink::parse("discard"), Ok(Sink::Discard));
        assert_eq!(Sink::parse("keep"), Ok(Sink::Keep));
        assert!(Sink::parse("file").is_err());
        assert_eq!(serde_json::to_string(&Sink::Discard).unwrap(), "\"discard\"");
    }
}
