//! Reading one protocol line with a cap, so that a peer cannot make the other side hold
//! an endless line in memory, and a bad line is told apart from a broken stream.

use std::io::{self, BufRead};

/// Bytes of one request line the agent reads. The largest request, a link spec, takes
/// under 1 KiB; a longer line is answered with an error and skipped.
pub const REQUEST_LINE_BYTES_MAX: usize = 64 << 10;

/// Bytes of one answer line the client reads. The largest answer, the links of a host
/// with a thousand interfaces, takes about 1 MiB.
pub const RESPONSE_LINE_BYTES_MAX: usize = 16 << 20;

/// One line, without its newline.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(String),
    /// Longer than the cap; the line was read to its end and dropped.
    TooLong,
    /// Not UTF-8 text (and so not JSON).
    NotUtf8,
}

/// Reads the next line, keeping at most `max` bytes of it; `None` at the end of input.
pub fn read_line(reader: &mut impl BufRead, max: usize) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let (mut too_long, mut any) = (false, false);
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long && buf.len() + chunk.len() > max {
            too_long = true;
            buf = Vec::new();
        }
        if !too_long {
            buf.extend_from_slice(chunk);
        }
        let used = newline.map_or(available.len(), |p| p + 1);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8(buf).map_or(Line::NotUtf8, Line::Text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = io::BufReader::with_capacity(7, input);
        std::iter::from_fn(|| read_line(&mut r, max).unwrap()).collect()
    }

    #[test]
    fn lines_are_capped_at_their_edge_and_reading_goes_on() {
        let input = b"0123456789\n01234567890\n\xff\xfe\nok\r\nlast";
        assert_eq!(
            lines(input, 10),
            vec![
                Line::Text("0123456789".into()),
                Line::TooLong,
                Line::NotUtf8,
                Line::Text("ok".into()),
                Line::Text("last".into())
            ]
        );
    }
}
