//! Nesting limits for field tables and arrays, checked before amq-protocol's
//! recursive parser sees the bytes.
//!
//! amq-protocol decodes a table by recursion, one stack frame chain per
//! nesting level: a few kilobytes of `F`/`A` headers nested a thousand deep
//! overflow the stack and abort the whole process. The scanner here walks
//! the same bytes iteratively, with an explicit stack of where each open
//! table or array ends, and refuses anything nested deeper than
//! [`MAX_DEPTH`]. It visits values in the order the parser does and stops
//! at the first byte it does not understand, so the parser can never reach
//! a depth the scanner has not seen.
//!
//! Which fields hold tables is fixed by the method: [`method_table_offset`]
//! knows every AMQP 0-9-1 method with a table argument (a client may send
//! any method, even server-only ones like connection.start, and
//! `parse_class` decodes them all).

/// Most tables and arrays nested inside one another that Warren accepts.
/// Real clients nest 3 or 4 (headers → x-death array → table → array);
/// RabbitMQ has no limit. 32 also keeps every stored table well inside
/// serde_json's recursion limit in `definitions.json`.
pub const MAX_DEPTH: usize = 32;

/// Why a table was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep;

/// Bytes each scalar value type takes, or `None` for length-prefixed and
/// unknown types.
fn fixed_size(kind: u8) -> Option<usize> {
    Some(match kind {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'L' | b'l' | b'd' | b'T' => 8,
        _ => return None,
    })
}

fn read_u32(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Check the field table that starts at `buf[0]` (its 4-byte length
/// included). Malformed bytes are not an error here: the parser reports
/// them; only nesting beyond [`MAX_DEPTH`] is.
pub fn check_table(buf: &[u8]) -> Result<(), TooDeep> {
    check_value(buf, b'F')
}

/// Check a field table given without its length prefix (an AMQPLAIN
/// response).
pub fn check_table_body(body: &[u8]) -> Result<(), TooDeep> {
    scan(body, 0, body.len(), b'F', 1)
}

fn check_value(buf: &[u8], kind: u8) -> Result<(), TooDeep> {
    let Some(len) = read_u32(buf, 0) else {
        return Ok(());
    };
    let end = 4usize.saturating_add(len).min(buf.len());
    scan(buf, 4, end, kind, 1)
}

/// One open table or array: where its contents end and what it holds.
struct Open {
    end: usize,
    kind: u8,
}

/// Walk the contents of a table (`kind` b'F') or array (b'A') spanning
/// `buf[start..end]`, already `depth` levels deep.
fn scan(buf: &[u8], start: usize, end: usize, kind: u8, depth: usize) -> Result<(), TooDeep> {
    if depth > MAX_DEPTH {
        return Err(TooDeep);
    }
    let mut stack = vec![Open { end, kind }];
    let mut at = start;
    while let Some(top) = stack.last() {
        if at >= top.end {
            at = top.end;
            stack.pop();
            continue;
        }
        if top.kind == b'F' {
            // A short-string key comes before each table entry's value.
            let key_len = usize::from(buf[at]);
            at += 1 + key_len;
            if at >= top.end {
                return Ok(());
            }
        }
        let value_kind = buf[at];
        at += 1;
        if let Some(size) = fixed_size(value_kind) {
            at += size;
            continue;
        }
        let Some(len) = read_u32(buf, at) else {
            return Ok(());
        };
        let value_end = at + 4 + len;
        if value_end > top.end {
            return Ok(());
        }
        match value_kind {
            b'S' | b'x' => at = value_end,
            b'F' | b'A' => {
                if stack.len() + depth > MAX_DEPTH {
                    return Err(TooDeep);
                }
                stack.push(Open {
                    end: value_end,
                    kind: value_kind,
                });
                at += 4;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Where the field table of a method's arguments starts in `args` (the
/// payload after class and method ids), or `None` for methods without one
/// or arguments too short to reach it.
pub fn method_table_offset(class_id: u16, method_id: u16, args: &[u8]) -> Option<usize> {
    // The fields before the table: 'u' a u16, 's' a short string, 'b' one
    // byte of flags (every method here has at most 8 bits).
    let layout: &[u8] = match (class_id, method_id) {
        (10, 10) => b"bb",    // connection.start: version major, minor
        (10, 11) => b"",      // connection.start-ok: client properties first
        (40, 10) => b"ussb",  // exchange.declare
        (40, 30) => b"usssb", // exchange.bind
        (40, 40) => b"usssb", // exchange.unbind
        (50, 10) => b"usb",   // queue.declare
        (50, 20) => b"usssb", // queue.bind
        (50, 50) => b"usss",  // queue.unbind
        (60, 20) => b"ussb",  // basic.consume
        _ => return None,
    };
    let mut at = 0usize;
    for field in layout {
        at += match field {
            b'u' => 2,
            b'b' => 1,
            _ => 1 + usize::from(*args.get(at)?),
        };
    }
    (at < args.len()).then_some(at)
}

/// Check the table argument of a method, if it has one.
pub fn check_method(class_id: u16, method_id: u16, args: &[u8]) -> Result<(), TooDeep> {
    match method_table_offset(class_id, method_id, args) {
        Some(at) => check_table(&args[at..]),
        None => Ok(()),
    }
}

/// Check the headers table in encoded basic properties (flags, then the
/// present fields in order: content-type and content-encoding as short
/// strings come before headers).
pub fn check_properties(props: &[u8]) -> Result<(), TooDeep> {
    let Some(flags) = props.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Ok(());
    };
    if flags & 0x2000 == 0 {
        return Ok(());
    }
    let mut at = 2usize;
    for bit in [0x8000u16, 0x4000] {
        if flags & bit != 0 {
            let Some(len) = props.get(at) else {
                return Ok(());
            };
            at += 1 + usize::from(*len);
        }
    }
    match props.get(at..) {
        Some(rest) => check_table(rest),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table nested `depth` levels deep (`depth` 1 = a flat table); the
    /// container at level `l` ≥ 2 is an array when `array_every` divides
    /// `l` (0: tables only).
    pub(crate) fn nested(depth: usize, array_every: usize) -> Vec<u8> {
        let is_array =
            |level: usize| level >= 2 && array_every > 0 && level.is_multiple_of(array_every);
        // Contents of the innermost container: one boolean.
        let mut contents: Vec<u8> = match is_array(depth) {
            true => vec![b't', 1],
            false => vec![1, b'k', b't', 1],
        };
        for level in (1..depth).rev() {
            let child_kind = if is_array(level + 1) { b'A' } else { b'F' };
            let mut next = match is_array(level) {
                true => vec![],
                false => vec![1, b'n'],
            };
            next.push(child_kind);
            next.extend_from_slice(&(contents.len() as u32).to_be_bytes());
            next.extend_from_slice(&contents);
            contents = next;
        }
        let mut table = (contents.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&contents);
        table
    }

    fn parses(bytes: &[u8]) -> bool {
        amq_protocol::types::parsing::parse_field_table(bytes).is_ok()
    }

    #[test]
    fn shallow_tables_pass_and_parse() {
        for depth in [1, 2, 5, MAX_DEPTH] {
            for every in [0, 2, 3] {
                let t = nested(depth, every);
                assert!(parses(&t), "depth {depth} every {every} is a valid table");
                assert_eq!(check_table(&t), Ok(()), "depth {depth} every {every}");
            }
        }
    }

    #[test]
    fn deep_tables_and_arrays_are_refused() {
        for depth in [MAX_DEPTH + 1, 100, 5_000] {
            for every in [0, 2, 1] {
                assert_eq!(check_table(&nested(depth, every)), Err(TooDeep));
            }
        }
    }

    #[test]
    fn truncated_and_garbage_input_is_left_to_the_parser() {
        let t = nested(MAX_DEPTH + 5, 2);
        for cut in 0..t.len() {
            // Never panics; a cut table may still be too deep.
            let _ = check_table(&t[..cut]);
        }
        assert_eq!(check_table(&[0, 0, 0, 3, 1, b'k', b'?']), Ok(()));
        assert_eq!(check_table_body(&[5, b'a']), Ok(()));
    }

    #[test]
    fn method_layouts_find_the_table() {
        // queue.declare: ticket, "q", flags, then the table.
        let mut args = vec![0, 0, 1, b'q', 0b10];
        args.extend_from_slice(&nested(MAX_DEPTH + 1, 0));
        assert_eq!(method_table_offset(50, 10, &args), Some(5));
        assert_eq!(check_method(50, 10, &args), Err(TooDeep));
        assert_eq!(
            check_method(60, 80, &args),
            Ok(()),
            "basic.ack has no table"
        );
        assert_eq!(method_table_offset(50, 10, &args[..3]), None);
    }

    #[test]
    fn properties_headers_are_found_after_content_type_and_encoding() {
        let mut props = vec![0xE0, 0x00, 2, b'a', b'b', 1, b'z'];
        props.extend_from_slice(&nested(MAX_DEPTH + 1, 3));
        assert_eq!(check_properties(&props), Err(TooDeep));
        let mut ok = vec![0x20, 0x00];
        ok.extend_from_slice(&nested(3, 2));
        assert_eq!(check_properties(&ok), Ok(()));
        assert!(amq_protocol::protocol::basic::parse_properties(&ok[..]).is_ok());
    }
}
