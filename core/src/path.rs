//! Field paths built on the stack and rendered only when an error is
//! reported, so validating a valid 1,000-policy snapshot allocates nothing
//! for paths.

use std::fmt;

/// A path such as `policies[2].limits[0].window`, as a chain of borrowed
/// segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldPath<'a> {
    parent: Option<&'a FieldPath<'a>>,
    segment: Segment<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Segment<'a> {
    /// Already-rendered text (possibly empty: the document root).
    Text(&'a str),
    Field(&'a str),
    Index(usize),
}

impl<'a> FieldPath<'a> {
    /// The document root.
    pub(crate) const ROOT: FieldPath<'static> = FieldPath { parent: None, segment: Segment::Text("") };

    /// A path given as text, e.g. `policies[2]` from a caller.
    pub(crate) fn text(text: &'a str) -> Self {
        FieldPath { parent: None, segment: Segment::Text(text) }
    }

    /// `self.name`.
    pub(crate) fn field(&'a self, name: &'a str) -> FieldPath<'a> {
        FieldPath { parent: Some(self), segment: Segment::Field(name) }
    }

    /// `self[index]`.
    pub(crate) fn index(&'a self, index: usize) -> FieldPath<'a> {
        FieldPath { parent: Some(self), segment: Segment::Index(index) }
    }

    fn write(&self, out: &mut String) {
        if let Some(parent) = self.parent {
            parent.write(out);
        }
        match self.segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::FieldPath;

    #[test]
    fn renders_fields_and_indices() {
        let root = FieldPath::ROOT;
        let policies = root.field("policies");
        let p2 = policies.index(2);
        let limits = p2.field("limits");
        let l0 = limits.index(0);
        assert_eq!(l0.field("window").to_string(), "policies[2].limits[0].window");
        let prefixed = FieldPath::text("policies[7]");
        assert_eq!(prefixed.field("id").to_string(), "policies[7].id");
        assert_eq!(FieldPath::ROOT.field("version").to_string(), "version");
    }
}
