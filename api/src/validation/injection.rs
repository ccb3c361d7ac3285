//! The injection corpus: values that would end, extend or alter a directive, rule or
//! placeholder if they reached an nginx, Traefik or Caddy configuration. Tests of every field
//! that reaches a configuration embed each of them into an otherwise valid value and expect
//! admission (and the renderer) to refuse it with the field's path.

/// `(what, attack)` pairs, embedded into otherwise valid values.
pub const ATTACKS: &[(&str, &str)] = &[
    ("CR/LF", "\r\nload_module /tmp/evil.so"),
    ("LF", "\ninclude /etc/passwd"),
    ("CR", "\r"),
    ("semicolon", ";"),
    ("directive", "; include /etc/passwd"),
    ("load_module", " load_module /tmp/evil.so"),
    ("open brace", "{"),
    ("close brace", "}"),
    ("block", "{ return 200; }"),
    ("double quote", "\""),
    ("single quote", "'"),
    ("comment", "#"),
    ("variable", "$host"),
    ("variable in braces", "${request_uri}"),
    ("Caddy placeholder", "{http.request.uri}"),
    ("Caddy env placeholder", "{env.HOME}"),
    ("backslash", "\\"),
    ("backquote", "`"),
    ("Traefik rule", "`) || Host(`evil.test"),
    ("NUL", "\0"),
    ("tab", "\t"),
    ("cyrillic a", "\u{0430}"),
    ("fullwidth semicolon", "\u{ff1b}"),
    ("fullwidth grave accent", "\u{ff40}"),
    ("zero-width space", "\u{200b}"),
    ("right-to-left override", "\u{202e}"),
    ("line separator", "\u{2028}"),
];

/// Longer than every name, host, path and header limit.
pub fn overlong() -> String {
    "a".repeat(1100)
}
