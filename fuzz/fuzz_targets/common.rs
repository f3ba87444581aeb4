//! Shared by the fuzz targets: a cursor that carves structured pieces out of the input.

#![allow(dead_code)]

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// One of `options`, chosen by the next byte.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[usize::from(self.byte()) % options.len()]
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A length-prefixed (one byte) string, lossily UTF-8.
    pub fn string(&mut self) -> String {
        let n = usize::from(self.byte());
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data;
        self.data = &[];
        r
    }
}

/// Adds a header if its name and value are valid.
pub fn add_header(headers: &mut http::HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(n), Ok(v)) = (
        http::HeaderName::from_bytes(name.trim().as_bytes()),
        http::HeaderValue::from_bytes(value),
    ) {
        headers.append(n, v);
    }
}
