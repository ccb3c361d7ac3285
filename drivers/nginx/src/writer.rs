//! A small writer for nginx configuration text that accepts only safe pieces.
//!
//! Directive names are `&'static str` (constants in this crate, never from users). Arguments
//! are [`Arg`]s, which can only be made from constants, numbers, or strings that passed a
//! [`crate::safe`] check; a quoted argument is always wrapped in double quotes by the writer.
//! So no caller can splice a raw string into the configuration by mistake.

use std::fmt::Write as _;

use crate::safe;

/// One argument of a directive.
#[derive(Debug, Clone)]
pub(crate) struct Arg {
    text: String,
    /// Quoted arguments cannot be concatenated with others.
    quoted: bool,
}

impl Arg {
    /// Constant text written by this crate (may contain nginx variables such as `$host`).
    pub(crate) fn lit(s: &'static str) -> Arg {
        Arg {
            text: s.to_string(),
            quoted: false,
        }
    }

    /// A number.
    pub(crate) fn num(n: impl Into<u64>) -> Arg {
        Arg {
            text: n.into().to_string(),
            quoted: false,
        }
    }

    /// A value that passed one of the [`safe`] checks for bare tokens; checked again here.
    pub(crate) fn token(s: &str) -> Result<Arg, String> {
        safe::token(s, safe::MAX_PATH)?;
        Ok(Arg {
            text: s.to_string(),
            quoted: false,
        })
    }

    /// A value emitted in double quotes; checked with [`safe::quoted`].
    pub(crate) fn quoted(s: &str) -> Result<Arg, String> {
        safe::quoted(s)?;
        Ok(Arg {
            text: format!("\"{s}\""),
            quoted: true,
        })
    }

    /// The argument as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The concatenation of unquoted arguments, e.g. `zone=` + name + `:10m`.
    pub(crate) fn cat<const N: usize>(parts: [Arg; N]) -> Arg {
        let mut text = String::new();
        for p in parts {
            assert!(!p.quoted, "quoted arguments are never concatenated");
            text.push_str(&p.text);
        }
        Arg {
            text,
            quoted: false,
        }
    }
}

/// Configuration text being written, with indentation by block depth.
#[derive(Debug, Default)]
pub(crate) struct Conf {
    out: String,
    depth: usize,
}

impl Conf {
    pub(crate) fn new() -> Conf {
        Conf::default()
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
    }

    fn head(&mut self, name: &'static str, args: &[Arg]) {
        self.indent();
        self.out.push_str(name);
        for a in args {
            self.out.push(' ');
            self.out.push_str(&a.text);
        }
    }

    /// `name args;`
    pub(crate) fn line(&mut self, name: &'static str, args: &[Arg]) {
        self.head(name, args);
        self.out.push_str(";\n");
    }

    /// `name args {` and one level deeper.
    pub(crate) fn open(&mut self, name: &'static str, args: &[Arg]) {
        self.head(name, args);
        self.out.push_str(" {\n");
        self.depth += 1;
    }

    /// `}` and one level up.
    pub(crate) fn close(&mut self) {
        self.depth -= 1;
        self.indent();
        self.out.push_str("}\n");
    }

    /// A comment line of constant text and checked tokens only.
    pub(crate) fn comment(&mut self, parts: &[&Arg], prefix: &'static str) {
        self.indent();
        self.out.push_str("# ");
        self.out.push_str(prefix);
        for p in parts {
            let _ = write!(self.out, " {}", p.text);
        }
        self.out.push('\n');
    }

    /// An empty line.
    pub(crate) fn blank(&mut self) {
        self.out.push('\n');
    }

    /// The text; every block is closed.
    pub(crate) fn finish(self) -> String {
        assert_eq!(self.depth, 0, "unbalanced block");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_blocks_and_refuses_unsafe_args() {
        let mut c = Conf::new();
        c.open("server", &[]);
        c.line(
            "add_header",
            &[
                Arg::token("X-A").unwrap(),
                Arg::quoted("default-src 'self'; img-src *").unwrap(),
                Arg::lit("always"),
            ],
        );
        c.line(
            "limit_req",
            &[Arg::cat([
                Arg::lit("zone=rl_"),
                Arg::token("api").unwrap(),
                Arg::lit(":"),
                Arg::num(10u32),
                Arg::lit("m"),
            ])],
        );
        c.close();
        assert_eq!(
            c.finish(),
            "server {\n    add_header X-A \"default-src 'self'; img-src *\" always;\n    limit_req zone=rl_api:10m;\n}\n"
        );
        assert!(Arg::token("a;b").is_err());
        assert!(Arg::quoted("a\"; load_module x; \"").is_err());
    }
}
