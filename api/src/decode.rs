//! Manifest decoding: files, directories and stdin; multi-document YAML and JSON; errors
//! that name the file, the document, the line and column, and the field path.
//!
//! Decoding checks structure only (types, required and unknown fields, `apiVersion`/`kind`);
//! [`crate::admit`] then applies defaults and semantic validation.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::kinds::{
    CertificateAuthority, DnsZone, Event, Gateway, GitSync, Guest, Mesh, Secret, Stack,
};
use crate::meta::TypeMeta;
use crate::resource::{Kind, Object};

/// Largest accepted document (manifest) in bytes: 1 MiB, like a Kubernetes object.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Largest accepted file in bytes.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024 * 1024;
/// Deepest accepted nesting of YAML collections.
pub const MAX_DEPTH: usize = 32;

/// Bytes read from one place, with the name used in error messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// File path, or `<stdin>`.
    pub name: String,
    /// Raw content.
    pub bytes: Vec<u8>,
}

/// One decoded manifest and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// File path or `<stdin>`.
    pub source: String,
    /// 1-based index of the document in its source.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: u64,
    /// The object.
    pub object: Object,
}

/// Where in the input an error was found. Line and column are 1-based and present when the
/// parser knows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// File path or `<stdin>`.
    pub source: String,
    /// 1-based document index, if the error is inside one document.
    pub document: Option<usize>,
    /// 1-based line.
    pub line: Option<u64>,
    /// 1-based column.
    pub column: Option<u64>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " line {l} column {c}"),
            (Some(l), None) => write!(f, " line {l}"),
            _ => Ok(()),
        }
    }
}

/// Why a manifest could not be decoded. Each variant is one failure point.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file, directory or stdin could not be read.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// What was being read.
        path: String,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A path given on the command line holds no `.yaml`, `.yml` or `.json` file.
    #[error("{path}: no .yaml, .yml or .json files found")]
    NoManifests {
        /// The path.
        path: String,
    },
    /// The input is not UTF-8.
    #[error("{at}: the input is not valid UTF-8")]
    NotUtf8 {
        /// Where the first bad byte is.
        at: Position,
    },
    /// A file or document is over the size limit.
    #[error("{at}: the {what} is {bytes} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Where.
        at: Position,
        /// `document` or `file`.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// YAML/JSON syntax error, or a parser limit (depth, aliases) was hit.
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Position,
        /// The parser's message.
        message: String,
    },
    /// The document is not a mapping with `apiVersion` and `kind`.
    #[error("{at}: {field}: {reason}")]
    TypeMeta {
        /// Where.
        at: Position,
        /// `apiVersion` or `kind`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A field has the wrong type, is unknown, or a required one is missing.
    #[error("{at}: {path}: {reason}")]
    Field {
        /// Where.
        at: Position,
        /// Field path, e.g. `spec.networks[0].ipv4`.
        path: String,
        /// Why.
        reason: String,
    },
}

impl DecodeError {
    /// Where the error is, when it is inside an input.
    pub fn position(&self) -> Option<&Position> {
        match self {
            DecodeError::Read { .. } | DecodeError::NoManifests { .. } => None,
            DecodeError::NotUtf8 { at }
            | DecodeError::TooLarge { at, .. }
            | DecodeError::Syntax { at, .. }
            | DecodeError::TypeMeta { at, .. }
            | DecodeError::Field { at, .. } => Some(at),
        }
    }
}

/// Reads `path`: `-` is stdin, a directory is walked recursively (files ending in `.yaml`,
/// `.yml`, `.json`, sorted by path; hidden entries and symlinked directories are skipped).
pub fn read_path(path: &str) -> Result<Vec<Source>, DecodeError> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_SOURCE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| DecodeError::Read {
                path: "<stdin>".into(),
                error,
            })?;
        return Ok(vec![Source {
            name: "<stdin>".into(),
            bytes,
        }]);
    }
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|error| DecodeError::Read {
        path: path.into(),
        error,
    })?;
    if !meta.is_dir() {
        return Ok(vec![read_file(p)?]);
    }
    let mut files = Vec::new();
    walk(p, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(DecodeError::NoManifests { path: path.into() });
    }
    files.iter().map(|f| read_file(f)).collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DecodeError> {
    let read_err = |error| DecodeError::Read {
        path: dir.display().to_string(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            walk(&path, out)?;
        } else if is_manifest_name(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn is_manifest_name(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn read_file(p: &Path) -> Result<Source, DecodeError> {
    let name = p.display().to_string();
    let file = std::fs::File::open(p).map_err(|error| DecodeError::Read {
        path: name.clone(),
        error,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| DecodeError::Read {
            path: name.clone(),
            error,
        })?;
    Ok(Source { name, bytes })
}

/// Decodes every document of `source`. Each document fails or succeeds on its own, so one
/// bad manifest does not hide the errors of the others. Large sources are decoded on every
/// core, in order.
pub fn decode_source(source: &Source) -> Vec<Result<Document, DecodeError>> {
    match documents(source) {
        Err(e) => vec![Err(e)],
        Ok(docs) => crate::par::map_ordered(&docs, |d| d.decode(&source.name)),
    }
}

/// One document of a source, not decoded yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk<'a> {
    /// 1-based index in its source.
    index: usize,
    /// 0-based line of its first line in the source.
    first_line: u64,
    text: &'a str,
}

impl Chunk<'_> {
    /// Decodes it; `source` names the source in errors.
    pub(crate) fn decode(&self, source: &str) -> Result<Document, DecodeError> {
        let at = Position {
            source: source.into(),
            document: Some(self.index),
            line: None,
            column: None,
        };
        decode_document(self.text, at, self.first_line).map(|object| Document {
            source: source.into(),
            index: self.index,
            line: self.first_line + 1,
            object,
        })
    }
}

/// Splits `source` into its documents, or fails for the whole source (too large, not
/// UTF-8).
pub(crate) fn documents(source: &Source) -> Result<Vec<Chunk<'_>>, DecodeError> {
    let whole = Position {
        source: source.name.clone(),
        ..Position::default()
    };
    if source.bytes.len() > MAX_SOURCE_BYTES {
        return Err(DecodeError::TooLarge {
            at: whole,
            what: "file",
            bytes: source.bytes.len(),
            limit: MAX_SOURCE_BYTES,
        });
    }
    let text = match std::str::from_utf8(&source.bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &source.bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let column =
                (valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)) as u64
                    + 1;
            return Err(DecodeError::NotUtf8 {
                at: Position {
                    line: Some(line),
                    column: Some(column),
                    ..whole
                },
            });
        }
    };
    Ok(split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(i, (first_line, text))| Chunk {
            index: i + 1,
            first_line,
            text,
        })
        .collect())
}

/// Decodes all of `text` (as if read from a file called `name`); fails on the first bad document.
pub fn decode_str(name: &str, text: &str) -> Result<Vec<Object>, DecodeError> {
    decode_source(&Source {
        name: name.into(),
        bytes: text.as_bytes().to_vec(),
    })
    .into_iter()
    .map(|d| d.map(|d| d.object))
    .collect()
}

/// Splits a YAML stream at document markers (`---` and `...` at the start of a line, which
/// YAML forbids inside content), returning each non-empty document with the 0-based line
/// it starts on.
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document
    let mut start_line = 0u64;
    let mut in_doc_after_end = false;
    let mut offset = 0usize;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let line_no = line_no as u64;
        let marker = |m: &str| {
            line.starts_with(m)
                && line[3..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r')
        };
        if marker("---") {
            if !in_doc_after_end {
                docs.push((start_line, &text[start..offset]));
            }
            start = offset;
            start_line = line_no;
            in_doc_after_end = false;
        } else if marker("...") {
            if !in_doc_after_end {
                docs.push((start_line, &text[start..offset]));
            }
            in_doc_after_end = true;
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    if !in_doc_after_end || start < text.len() {
        docs.push((start_line, &text[start..]));
    }
    docs.into_iter()
        .filter(|(_, d)| !is_blank_document(d))
        .collect()
}

fn is_blank_document(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with("%")
    })
}

fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    if let Some(budget) = options.budget.as_mut() {
        budget.max_depth = MAX_DEPTH;
        budget.max_aliases = 1_000;
        budget.max_nodes = 200_000;
    }
    options
}

/// Decodes one document. `first_line` is the 0-based line of `chunk` in its source.
fn decode_document(chunk: &str, mut at: Position, first_line: u64) -> Result<Object, DecodeError> {
    if chunk.len() > MAX_DOCUMENT_BYTES {
        at.line = Some(first_line + 1);
        return Err(DecodeError::TooLarge {
            at,
            what: "document",
            bytes: chunk.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    // Fast path: a document that states its kind on a plain top-level line is decoded once,
    // as that kind, and kept if its apiVersion and kind fields confirm the guess. Anything
    // else (and every failure) takes the general path below, so errors are the same.
    if let Some(kind) = sniff_kind(chunk)
        && let Some(object) = decode_kind_quick(kind, chunk)
        && crate::with_object!(&object, o => o.api_version == crate::API_VERSION && o.kind == kind.name())
    {
        return Ok(object);
    }
    let locate = |at: &Position, e: &serde_saphyr::Error| -> Position {
        let mut at = at.clone();
        if let Some(loc) = e.location()
            && loc.line() > 0
        {
            at.line = Some(loc.line() + first_line);
            at.column = Some(loc.column());
        }
        at
    };
    let type_meta: TypeMeta = match serde_saphyr::from_str_with_options(chunk, yaml_options()) {
        Ok(tm) => tm,
        Err(e) => {
            let message = bare_message(&e);
            let at = locate(&at, &e);
            // Structure errors of the top level (a list or a scalar instead of a mapping).
            if message.contains("expected struct TypeMeta")
                || message.contains("expected mapping")
                || message.contains("expected a mapping")
                || message.contains("invalid type")
            {
                return Err(DecodeError::TypeMeta {
                    at,
                    field: "kind",
                    reason: "a manifest must be a mapping with apiVersion and kind".into(),
                });
            }
            return Err(DecodeError::Syntax { at, message });
        }
    };
    let kind = check_type_meta(&type_meta).map_err(|(field, reason)| DecodeError::TypeMeta {
        at: at.clone(),
        field,
        reason,
    })?;
    decode_kind(kind, chunk, &at, first_line)
}

/// Decodes a YAML document as `kind`.
fn decode_kind(
    kind: Kind,
    chunk: &str,
    at: &Position,
    first_line: u64,
) -> Result<Object, DecodeError> {
    Ok(match kind {
        Kind::Guest => Object::Guest(decode_typed::<Guest>(chunk, at, first_line)?),
        Kind::Gateway => Object::Gateway(decode_typed::<Gateway>(chunk, at, first_line)?),
        Kind::Mesh => Object::Mesh(decode_typed::<Mesh>(chunk, at, first_line)?),
        Kind::CertificateAuthority => {
            Object::CertificateAuthority(decode_typed::<CertificateAuthority>(
                chunk, at, first_line,
            )?)
        }
        Kind::Stack => Object::Stack(decode_typed::<Stack>(chunk, at, first_line)?),
        Kind::GitSync => Object::GitSync(decode_typed::<GitSync>(chunk, at, first_line)?),
        Kind::DnsZone => Object::DnsZone(decode_typed::<DnsZone>(chunk, at, first_line)?),
        Kind::Secret => Object::Secret(decode_typed::<Secret>(chunk, at, first_line)?),
        Kind::Event => Object::Event(decode_typed::<Event>(chunk, at, first_line)?),
    })
}

/// Decodes a YAML document as `kind` without tracking field paths (which only error messages
/// need); `None` on any failure.
fn decode_kind_quick(kind: Kind, chunk: &str) -> Option<Object> {
    fn quick<T: DeserializeOwned>(chunk: &str) -> Option<T> {
        serde_saphyr::from_str_with_options(chunk, yaml_options()).ok()
    }
    Some(match kind {
        Kind::Guest => Object::Guest(quick(chunk)?),
        Kind::Gateway => Object::Gateway(quick(chunk)?),
        Kind::Mesh => Object::Mesh(quick(chunk)?),
        Kind::CertificateAuthority => Object::CertificateAuthority(quick(chunk)?),
        Kind::Stack => Object::Stack(quick(chunk)?),
        Kind::GitSync => Object::GitSync(quick(chunk)?),
        Kind::DnsZone => Object::DnsZone(quick(chunk)?),
        Kind::Secret => Object::Secret(quick(chunk)?),
        Kind::Event => Object::Event(quick(chunk)?),
    })
}

/// The kind a YAML document names on a top-level `kind: Name` line (plain or quoted value,
/// optional comment), if exactly one such line names a known kind. Only a guess: the caller
/// confirms it by decoding.
fn sniff_kind(chunk: &str) -> Option<Kind> {
    let mut found = None;
    for line in chunk.lines() {
        let Some(rest) = line.strip_prefix("kind:") else {
            continue;
        };
        let value = rest.split(" #").next().unwrap_or_default().trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if found.is_some() {
            return None;
        }
        found = Some(value.parse::<Kind>().ok()?);
    }
    found
}

/// Checks `apiVersion` and `kind`, returning the kind or `(field, reason)`.
fn check_type_meta(tm: &TypeMeta) -> Result<Kind, (&'static str, String)> {
    match tm.api_version.as_deref() {
        None => return Err(("apiVersion", "is required".into())),
        Some(crate::API_VERSION) => {}
        Some(other) => {
            return Err((
                "apiVersion",
                format!(
                    "{} is not served here (use {:?})",
                    quote(other),
                    crate::API_VERSION
                ),
            ));
        }
    }
    let Some(kind) = tm.kind.as_deref() else {
        return Err(("kind", "is required".into()));
    };
    kind.parse::<Kind>().map_err(|_| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        (
            "kind",
            format!(
                "{} is not a known kind (one of {})",
                quote(kind),
                names.join(", ")
            ),
        )
    })
}

fn decode_typed<T: DeserializeOwned>(
    chunk: &str,
    at: &Position,
    first_line: u64,
) -> Result<T, DecodeError> {
    let mut path = None;
    let result =
        serde_saphyr::with_deserializer_from_str_with_options(chunk, yaml_options(), |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        });
    result.map_err(|e| {
        let mut at = at.clone();
        if let Some(loc) = e.location()
            && loc.line() > 0
        {
            at.line = Some(loc.line() + first_line);
            at.column = Some(loc.column());
        }
        field_error(at, path.unwrap_or_default(), &bare_message(&e))
    })
}

/// Decodes one object from JSON bytes (the API's wire format), with the same checks and
/// error shapes as YAML decoding.
pub fn decode_json(name: &str, bytes: &[u8]) -> Result<Object, DecodeError> {
    let at = Position {
        source: name.into(),
        ..Position::default()
    };
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DecodeError::TooLarge {
            at,
            what: "document",
            bytes: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    // Fast path: JSON as Phoenix writes it starts with apiVersion and kind; decode it once as
    // that kind and keep it if its fields confirm the guess. Anything else (and every
    // failure) takes the general path below, so errors are the same.
    if let Some(kind) = sniff_json_kind(bytes)
        && let Some(object) = decode_json_quick(kind, bytes)
        && crate::with_object!(&object, o => o.api_version == crate::API_VERSION && o.kind == kind.name())
    {
        return Ok(object);
    }
    let json_at = |e: &serde_json::Error| Position {
        line: (e.line() > 0).then_some(e.line() as u64),
        column: (e.line() > 0).then_some(e.column() as u64),
        ..at.clone()
    };
    let tm: TypeMeta = serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax {
        at: json_at(&e),
        message: e.to_string(),
    })?;
    let kind = check_type_meta(&tm).map_err(|(field, reason)| DecodeError::TypeMeta {
        at: at.clone(),
        field,
        reason,
    })?;
    fn typed<T: DeserializeOwned>(
        bytes: &[u8],
        json_at: &dyn Fn(&serde_json::Error) -> Position,
    ) -> Result<T, DecodeError> {
        // Field paths are tracked only to explain a failure: decode without them first.
        if let Ok(v) = serde_json::from_slice(bytes) {
            return Ok(v);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            let msg = strip_location_suffix(&msg).to_string();
            field_error(json_at(&inner), path, &msg)
        })
    }
    Ok(match kind {
        Kind::Guest => Object::Guest(typed(bytes, &json_at)?),
        Kind::Gateway => Object::Gateway(typed(bytes, &json_at)?),
        Kind::Mesh => Object::Mesh(typed(bytes, &json_at)?),
        Kind::CertificateAuthority => Object::CertificateAuthority(typed(bytes, &json_at)?),
        Kind::Stack => Object::Stack(typed(bytes, &json_at)?),
        Kind::GitSync => Object::GitSync(typed(bytes, &json_at)?),
        Kind::DnsZone => Object::DnsZone(typed(bytes, &json_at)?),
        Kind::Secret => Object::Secret(typed(bytes, &json_at)?),
        Kind::Event => Object::Event(typed(bytes, &json_at)?),
    })
}

/// The kind of JSON that starts `{"apiVersion":"<served version>","kind":"<Kind>"`, as
/// Phoenix serializes objects; only a guess, confirmed by decoding.
fn sniff_json_kind(bytes: &[u8]) -> Option<Kind> {
    let rest = bytes.strip_prefix(br#"{"apiVersion":""#)?;
    let rest = rest.strip_prefix(crate::API_VERSION.as_bytes())?;
    let rest = rest.strip_prefix(br#"","kind":""#)?;
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Decodes JSON as `kind` without tracking field paths; `None` on any failure.
fn decode_json_quick(kind: Kind, bytes: &[u8]) -> Option<Object> {
    fn quick<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        serde_json::from_slice(bytes).ok()
    }
    Some(match kind {
        Kind::Guest => Object::Guest(quick(bytes)?),
        Kind::Gateway => Object::Gateway(quick(bytes)?),
        Kind::Mesh => Object::Mesh(quick(bytes)?),
        Kind::CertificateAuthority => Object::CertificateAuthority(quick(bytes)?),
        Kind::Stack => Object::Stack(quick(bytes)?),
        Kind::GitSync => Object::GitSync(quick(bytes)?),
        Kind::DnsZone => Object::DnsZone(quick(bytes)?),
        Kind::Secret => Object::Secret(quick(bytes)?),
        Kind::Event => Object::Event(quick(bytes)?),
    })
}

/// Turns serde's messages into `path: reason` with the offending field named.
fn field_error(at: Position, path: String, message: &str) -> DecodeError {
    let join = |path: &str, field: &str| {
        if path.is_empty() || path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let path = if path == "." { String::new() } else { path };
    if let Some(field) = between(message, "missing field `", "`") {
        return DecodeError::Field {
            at,
            path: join(&path, field),
            reason: "is required".into(),
        };
    }
    if let Some(field) = between(message, "unknown field `", "`") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| format!(" (expected {})", e.trim_start_matches("one of ")))
            .unwrap_or_default();
        // serde_path_to_error already includes the unknown key in the path.
        let full = if path.ends_with(field) {
            path.clone()
        } else {
            join(&path, field)
        };
        return DecodeError::Field {
            at,
            path: full,
            reason: format!("is not a known field{expected}"),
        };
    }
    let reason = message
        .strip_prefix("invalid type: ")
        .map(|m| format!("wrong type: {m}"))
        .unwrap_or_else(|| message.to_string());
    DecodeError::Field {
        at,
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path
        },
        reason,
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// The parser's message without its `error: line N column M:` prefix.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let first = full.lines().next().unwrap_or_default();
    let s = first.strip_prefix("error: ").unwrap_or(first);
    let s = match s.strip_prefix("line ") {
        Some(rest) => rest
            .split_once(": ")
            .map(|(_, m)| m)
            .unwrap_or(rest)
            .to_string(),
        None => s.to_string(),
    };
    let s = strip_location_suffix(s.trim());
    if s.starts_with("budget breached: Depth") || s.contains("recursion limit exceeded") {
        return format!("the document nests deeper than {MAX_DEPTH} levels");
    }
    if let Some(detail) = s.strip_prefix("budget breached: ") {
        return format!(
            "the document expands to too many nodes or aliases (a YAML alias bomb?): {detail}"
        );
    }
    s.to_string()
}

/// Drops a trailing ` at line N, column M` that some messages carry.
fn strip_location_suffix(s: &str) -> &str {
    match s.rfind(" at line ") {
        Some(i) if s[i..].contains("column") => &s[..i],
        _ => s,
    }
}

/// Quotes a user value for an error message: escaped, and cut at 64 characters.
pub fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_markers_only_at_line_start() {
        let text = "a: 1\n---\nb: |\n  --- not a marker\n...\n# comment only\n---\nc: 3\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0], (0, "a: 1\n"));
        assert_eq!(docs[1].0, 1);
        assert!(docs[1].1.contains("not a marker"));
        assert_eq!(docs[2], (6, "---\nc: 3\n"));
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert!(split_documents("---\n---\n# nothing\n").is_empty());
    }

    #[test]
    fn kind_is_sniffed_only_from_plain_top_level_lines() {
        assert_eq!(
            sniff_kind("apiVersion: x\nkind: Guest\n"),
            Some(Kind::Guest)
        );
        assert_eq!(sniff_kind("kind: \"Gateway\"  # c\n"), Some(Kind::Gateway));
        assert_eq!(sniff_kind("kind: 'Mesh'\n"), Some(Kind::Mesh));
        assert_eq!(sniff_kind("kind: guest\n"), None);
        assert_eq!(sniff_kind("spec:\n  kind: Guest\n"), None);
        assert_eq!(sniff_kind("kind: Guest\nkind: Guest\n"), None);
        assert_eq!(sniff_kind("{kind: Guest}\n"), None);
    }

    /// The single-pass path gives exactly what the general path gives, for good documents
    /// and for every kind of failure (the guess is confirmed or discarded).
    #[test]
    fn sniffed_decoding_matches_the_general_path() {
        let guest = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: a\nspec:\n  type: lxc\n  source: {template: \"local:vztmpl/x.tar.zst\"}\n";
        let cases = [
            guest.to_string(),
            guest.replace("kind: Guest", "kind: Gateway"),
            guest.replace("phoenix.thinkheads.ai/v1alpha1", "v1"),
            guest.replace("type: lxc", "type: lxc\n  bogus: 1"),
            guest.replace("kind: Guest\n", "kind: Guest\nkind: Guest\n"),
            guest.replace("kind: Guest", "\"kind\": Guest"),
            format!("{guest}  cores: [1]\n"),
        ];
        for text in cases {
            let at = Position {
                source: "t.yaml".into(),
                document: Some(1),
                ..Position::default()
            };
            let fast = decode_document(&text, at.clone(), 0).map_err(|e| e.to_string());
            // The general path: the same document with the kind line not sniffable.
            let general = decode_document(&text.replacen("kind:", "\"kind\":", 1), at, 0)
                .map_err(|e| e.to_string());
            assert_eq!(fast, general, "{text}");
        }
    }

    /// JSON decoding: the sniffed single pass gives what the general path gives.
    #[test]
    fn sniffed_json_decoding_matches_the_general_path() {
        let good = r#"{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Guest","metadata":{"name":"a"},"spec":{"type":"lxc","source":{"template":"local:vztmpl/x.tar.zst"}}}"#;
        assert_eq!(sniff_json_kind(good.as_bytes()), Some(Kind::Guest));
        let cases = [
            good.to_string(),
            good.replace(r#""kind":"Guest""#, r#""kind":"Gateway""#),
            good.replace(r#""kind":"Guest""#, r#""kind":"Nope""#),
            good.replace(r#""type":"lxc""#, r#""type":"lxc","bogus":1"#),
            good.replace(r#""metadata""#, r#""kind":"Guest","metadata""#),
            format!("{good} trailing"),
            good.replace(r#""type":"lxc""#, r#""type":7"#),
        ];
        for json in cases {
            let fast = decode_json("t", json.as_bytes()).ok();
            // The general path: a leading space hides the prefix (errors then differ only in
            // their column; on failure the fast path falls through to the same code anyway).
            let general = decode_json("t", format!(" {json}").as_bytes()).ok();
            assert_eq!(fast, general, "{json}");
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore = "timing probe: cargo test --release -p phoenix-api --lib decode_speed -- --ignored --nocapture"]
    fn decode_speed() {
        let json = br#"{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Guest","metadata":{"resourceVersion":"42","name":"wtyped-000123","uid":"2b7c1c3e-8f4e-4a57-9b2a-0c6f3c1d2e4f","generation":1,"creationTimestamp":"2026-11-22T09:00:00Z","annotations":{"bench.phoenix/seq":"123"}},"spec":{"type":"lxc","source":{"template":"local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst"},"cores":1,"memoryMiB":512,"rootfs":{"storage":"local-lvm","sizeGiB":4},"networks":[{"name":"eth0","bridge":"vmbr0","ipv4":"dhcp"}],"unprivileged":true,"startOnBoot":false,"powerState":"running","protection":false}}"#;
        let spaced = [b" ".as_slice(), json.as_slice()].concat();
        assert!(sniff_json_kind(json).is_some());
        assert!(
            decode_json_quick(Kind::Guest, json).is_some(),
            "quick path fails"
        );
        for (name, bytes) in [("sniffed", json.as_slice()), ("general", spaced.as_slice())] {
            let start = std::time::Instant::now();
            for _ in 0..100_000 {
                decode_json("t", bytes).unwrap();
            }
            eprintln!("{name}: {:?} per object", start.elapsed() / 100_000);
        }
    }
}
