//! A small RFC 4180 CSV reader for `metadata.csv` files: comma-separated
//! fields, fields in double quotes may hold commas, line breaks and quotes
//! written twice (`""`); records end with LF or CRLF.
//!
//! It works on bytes, so a field that is not UTF-8 spoils only its own
//! record, and it keeps going after a malformed record, so every bad row
//! can be reported with its line number.

/// One record (row) of a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The 1-based line on which the record starts.
    pub line: usize,
    /// The fields, unquoted, as bytes.
    pub fields: Vec<Vec<u8>>,
    /// Why the record is malformed, when it is.
    pub error: Option<String>,
}

impl Record {
    /// An empty line: one empty field and no error.
    pub(crate) fn is_blank(&self) -> bool {
        self.error.is_none() && self.fields.len() == 1 && self.fields[0].is_empty()
    }
}

/// Whether `bytes[i]` ends a field: a comma, a line break, or a CR of a CRLF
/// (or a CR at the very end).
fn ends_field(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b',' | b'\n' => true,
        b'\r' => i + 1 == bytes.len() || bytes[i + 1] == b'\n',
        _ => false,
    }
}

/// Splits `bytes` into records. A UTF-8 byte order mark is not removed here.
pub(crate) fn parse(bytes: &[u8]) -> Vec<Record> {
    let n = bytes.len();
    let mut records = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < n {
        let start = line;
        let mut fields = Vec::new();
        let mut error = None;
        loop {
            let mut field = Vec::new();
            if i < n && bytes[i] == b'"' {
                let opened = line;
                i += 1;
                let mut closed = false;
                while i < n {
                    match bytes[i] {
                        b'"' if i + 1 < n && bytes[i + 1] == b'"' => {
                            field.push(b'"');
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b => {
                            if b == b'\n' {
                                line += 1;
                            }
                            field.push(b);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    error.get_or_insert_with(|| {
                        format!("the quoted field opened on line {opened} is never closed")
                    });
                }
                if i < n && !ends_field(bytes, i) {
                    error.get_or_insert_with(|| {
                        "text after the closing quote of a field (a quote inside a quoted field \
                         is written twice: \"\")"
                            .to_string()
                    });
                    while i < n && !ends_field(bytes, i) {
                        field.push(bytes[i]);
                        i += 1;
                    }
                }
            } else {
                while i < n && !ends_field(bytes, i) {
                    field.push(bytes[i]);
                    i += 1;
                }
            }
            fields.push(field);
            if i < n && bytes[i] == b',' {
                i += 1;
                continue;
            }
            if i < n && bytes[i] == b'\r' {
                i += 1;
            }
            if i < n && bytes[i] == b'\n' {
                i += 1;
                line += 1;
            }
            break;
        }
        records.push(Record {
            line: start,
            fields,
            error,
        });
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(r: &Record) -> Vec<&str> {
        r.fields
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    #[test]
    fn plain_and_quoted_fields() {
        let r = parse(b"file_name,text\na.png,a cat\nb.png,\"a dog, \"\"running\"\"\"\n");
        assert_eq!(r.len(), 3);
        assert_eq!(fields(&r[0]), ["file_name", "text"]);
        assert_eq!(fields(&r[1]), ["a.png", "a cat"]);
        assert_eq!(fields(&r[2]), ["b.png", "a dog, \"running\""]);
        assert!(r.iter().all(|r| r.error.is_none()));
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn line_breaks_inside_quotes_and_crlf() {
        let r = parse(b"a,b\r\n\"two\r\nlines\",x\r\n\"\",\r\nlast,\"q\"");
        assert_eq!(fields(&r[0]), ["a", "b"]);
        assert_eq!(fields(&r[1]), ["two\r\nlines", "x"]);
        assert_eq!(fields(&r[2]), ["", ""]);
        assert_eq!(fields(&r[3]), ["last", "q"]);
        // a record's line is where it starts; the quoted line break counts
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 4, 5]);
    }

    #[test]
    fn empty_fields_blank_lines_and_trailing_commas() {
        let r = parse(b"a,,c\n\nd,\n,");
        assert_eq!(fields(&r[0]), ["a", "", "c"]);
        assert!(r[1].is_blank());
        assert_eq!(r[1].line, 2);
        assert_eq!(fields(&r[2]), ["d", ""]);
        assert_eq!(fields(&r[3]), ["", ""]);
        assert_eq!(r.len(), 4);
        assert!(parse(b"").is_empty());
        // a quote inside an unquoted field is kept as it is
        assert_eq!(fields(&parse(b"5\" disk,x")[0]), ["5\" disk", "x"]);
    }

    #[test]
    fn malformed_records_are_marked_and_reading_goes_on() {
        let r = parse(b"a,\"b\"junk,c\nd,e\n");
        assert!(r[0].error.as_deref().unwrap().contains("closing quote"));
        assert_eq!(fields(&r[0]), ["a", "bjunk", "c"]);
        assert_eq!((fields(&r[1]), r[1].error.clone()), (vec!["d", "e"], None));

        let r = parse(b"a,b\nc,\"never\nclosed\n");
        assert_eq!(r.len(), 2);
        let err = r[1].error.as_deref().unwrap();
        assert!(err.contains("opened on line 2 is never closed"), "{err}");
    }

    #[test]
    fn fields_are_bytes() {
        let r = parse(b"x,caf\xe9\n");
        assert_eq!(r[0].fields[1], b"caf\xe9");
        assert!(r[0].error.is_none());
    }
}
