//! A small text-only PDF layout on top of `pdf-writer`: headings, labelled
//! fields and wrapped paragraphs on A4 pages, in the standard Helvetica and
//! Courier fonts (never embedded: every PDF reader has them). Text is
//! WinAnsi-encoded; characters outside it print as `?` rather than breaking
//! the file. Deterministic: the same calls give the same bytes.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
/// Courier's advance is 0.6 em, so wrapping by characters is exact.
const MONO_ADVANCE: f32 = 0.6;
const BODY_SIZE: f32 = 9.0;
const LEADING: f32 = 1.35;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");
const MONO: Name<'static> = Name(b"F3");

#[derive(Debug, Clone, Copy)]
enum Face {
    Bold,
    Mono,
}

#[derive(Debug, Clone)]
struct Line {
    face: Face,
    size: f32,
    /// Indent from the left margin, in points.
    indent: f32,
    text: String,
    /// Extra space above, in points.
    space_before: f32,
}

/// A document being laid out.
#[derive(Debug, Default)]
pub struct Document {
    title: String,
    pages: Vec<Vec<Line>>,
    /// Vertical position of the next line's top, from the page top.
    cursor: f32,
}

impl Document {
    /// A document titled `title` (also its first heading).
    pub fn new(title: &str) -> Document {
        let mut doc = Document { title: title.to_owned(), pages: vec![Vec::new()], cursor: MARGIN };
        doc.push(Line {
            face: Face::Bold,
            size: 16.0,
            indent: 0.0,
            text: title.to_owned(),
            space_before: 0.0,
        });
        doc
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) {
        self.push(Line {
            face: Face::Bold,
            size: 12.0,
            indent: 0.0,
            text: text.to_owned(),
            space_before: 10.0,
        });
    }

    /// `label: value`, the value wrapped under itself.
    pub fn field(&mut self, label: &str, value: &str) {
        let label_width = 22;
        let mut first = true;
        for chunk in wrap(value, self.columns(0.0) - label_width) {
            let text = if first {
                format!("{label:<pad$} {chunk}", pad = label_width - 1)
            } else {
                format!("{:label_width$}{chunk}", "")
            };
            first = false;
            self.push(Line { face: Face::Mono, size: BODY_SIZE, indent: 0.0, text, space_before: 0.0 });
        }
    }

    /// A paragraph of prose, wrapped.
    pub fn paragraph(&mut self, text: &str) {
        self.text_block(text, 0.0, Face::Mono);
    }

    /// An indented block (a JSON document, a list item), wrapped.
    pub fn indented(&mut self, text: &str) {
        self.text_block(text, 18.0, Face::Mono);
    }

    /// Vertical space.
    pub fn gap(&mut self) {
        self.cursor += BODY_SIZE;
    }

    /// Pages laid out so far.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    fn text_block(&mut self, text: &str, indent: f32, face: Face) {
        for source_line in text.lines() {
            for chunk in wrap(source_line, self.columns(indent)) {
                self.push(Line { face, size: BODY_SIZE, indent, text: chunk, space_before: 0.0 });
            }
        }
    }

    fn columns(&self, indent: f32) -> usize {
        let width = PAGE_WIDTH - 2.0 * MARGIN - indent;
        // Positive and small: the cast cannot truncate meaningfully.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let columns = (width / (BODY_SIZE * MONO_ADVANCE)).floor() as usize;
        columns.max(20)
    }

    fn push(&mut self, line: Line) {
        let height = line.size * LEADING + line.space_before;
        if self.cursor + height > PAGE_HEIGHT - MARGIN {
            self.pages.push(Vec::new());
            self.cursor = MARGIN;
        }
        self.cursor += height;
        if let Some(page) = self.pages.last_mut() {
            page.push(line);
        }
    }

    /// The PDF bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let info = Ref::new(3);
        let fonts = [
            (REGULAR, Ref::new(4), "Helvetica"),
            (BOLD, Ref::new(5), "Helvetica-Bold"),
            (MONO, Ref::new(6), "Courier"),
        ];
        let first_page = 7;
        let page_ids: Vec<Ref> =
            (0..self.pages.len()).map(|i| Ref::new(first_page + 2 * i32::try_from(i).unwrap_or(0))).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(page_ids.iter().copied())
            .count(i32::try_from(page_ids.len()).unwrap_or(i32::MAX));
        pdf.document_info(info).title(TextStr(&self.title)).producer(TextStr("AOS control plane"));
        for (_, id, base) in fonts {
            pdf.type1_font(id).base_font(Name(base.as_bytes())).encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        let total = self.pages.len();
        for (index, lines) in self.pages.iter().enumerate() {
            let page_id = page_ids[index];
            let content_id = Ref::new(page_id.get() + 1);
            let mut page = pdf.page(page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
            page.parent(tree);
            page.contents(content_id);
            let mut resources = page.resources();
            let mut font_dict = resources.fonts();
            for (name, id, _) in fonts {
                font_dict.pair(name, id);
            }
            font_dict.finish();
            resources.finish();
            page.finish();

            let mut content = Content::new();
            let mut y = PAGE_HEIGHT - MARGIN;
            for line in lines {
                y -= line.size * LEADING + line.space_before;
                let font = match line.face {
                    Face::Bold => BOLD,
                    Face::Mono => MONO,
                };
                content.begin_text();
                content.set_font(font, line.size);
                content.next_line(MARGIN + line.indent, y);
                content.show(Str(&win_ansi(&line.text)));
                content.end_text();
            }
            // Footer: page numbers.
            content.begin_text();
            content.set_font(REGULAR, 8.0);
            content.next_line(MARGIN, MARGIN / 2.0);
            content.show(Str(&win_ansi(&format!("{} - page {} of {total}", self.title, index + 1))));
            content.end_text();
            pdf.stream(content_id, &content.finish());
        }
        pdf.finish()
    }
}

/// Splits `text` into pieces of at most `columns` characters, at spaces
/// where it can.
fn wrap(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(1);
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        loop {
            let len = current.chars().count();
            let word_len = word.chars().count();
            let needed = if len == 0 { word_len } else { len + 1 + word_len };
            if needed <= columns {
                if len > 0 {
                    current.push(' ');
                }
                current.push_str(&word);
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            // A word longer than a line: cut it.
            let head: String = word.chars().take(columns).collect();
            word = word.chars().skip(columns).collect();
            lines.push(head);
            if word.is_empty() {
                break;
            }
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// WinAnsi bytes of `text`: ASCII and Latin-1 as is, a few common
/// typographic characters mapped, anything else `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{ff}' => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            '\u{2013}' => 0x96,
            '\u{2014}' => 0x97,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            '\u{2022}' => 0x95,
            '\u{2026}' => 0x85,
            '\u{20ac}' => 0x80,
            '\t' => b' ',
            _ => b'?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_character_and_respects_the_width() {
        let text = "the quick brown fox jumps over the lazy dog and a_very_long_identifier_that_will_not_fit";
        let lines = wrap(text, 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), text.replace(' ', ""));
        assert_eq!(wrap("", 10), vec![String::new()]);
    }

    #[test]
    fn text_outside_win_ansi_becomes_a_question_mark() {
        assert_eq!(win_ansi("a\u{e9}\u{2014}\u{4e2d}"), vec![b'a', 0xe9, 0x97, b'?']);
    }

    #[test]
    fn long_documents_break_into_pages_and_render_deterministically() {
        let build = || {
            let mut doc = Document::new("Report");
            for i in 0..200 {
                doc.field(&format!("field {i}"), "value");
            }
            doc
        };
        let doc = build();
        assert!(doc.page_count() >= 3, "{}", doc.page_count());
        let bytes = doc.finish();
        assert!(bytes.starts_with(b"%PDF-"), "a PDF");
        assert_eq!(bytes, build().finish());
    }
}
