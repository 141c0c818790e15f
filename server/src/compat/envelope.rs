//! JSON-RPC 2.0 as the 2018 server spoke it: the request envelope (with `jsonrpc` and `id`
//! optional, as its README's examples sent them), positional or named params, and the answer
//! envelope whose HTTP status follows the error (reference §2.1).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A call's parameters as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// Absent or `null`.
    None,
    /// An array: matched to the method's arguments in order.
    Positional(Vec<Value>),
    /// An object: matched by name.
    Named(Map<String, Value>),
}

/// One JSON-RPC call.
#[derive(Debug)]
pub struct Call {
    /// Echoed in the answer (`null` when absent).
    pub id: Value,
    /// An alias (`submitJobJson`) or a full name (`ccc.compute…RpcRoutes.submitJobJson`).
    pub method: String,
    /// Its parameters.
    pub params: Params,
}

/// A JSON-RPC error. Codes in 200–599 are HTTP statuses (the 2018 convention: `404` for an
/// unknown job), the others the protocol's own.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// A sentence for people.
    pub message: String,
    /// Details: for errors of the v1 API, its error object (stable `code`, `field`, `jobId`).
    pub data: Option<Value>,
    /// `Retry-After` of the answer: the v1 answer's, so a rate-limited 2018 client learns when
    /// to come back.
    pub retry_after: Option<u32>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
            retry_after: None,
        }
    }

    /// `-32700`: the body is not JSON.
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(-32700, message)
    }

    /// `-32600`: JSON, but not a call.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(-32600, message)
    }

    /// `-32601`: no such method.
    pub fn no_method(message: impl Into<String>) -> Self {
        Self::new(-32601, message)
    }

    /// `-32602`: the parameters do not fit the method.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }

    /// An error that is an HTTP status (`404`, `403`, …).
    pub fn http(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(i64::from(status.as_u16()), message)
    }

    /// The same error with `data`.
    pub fn with_data(self, data: Value) -> Self {
        RpcError {
            data: Some(data),
            ..self
        }
    }

    /// The HTTP status of the answer carrying this error.
    pub fn status(&self) -> StatusCode {
        match self.code {
            200..=599 => StatusCode::from_u16(self.code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            -32700 | -32600 | -32602 => StatusCode::BAD_REQUEST,
            -32601 => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

impl From<crate::error::ApiError> for RpcError {
    /// A v1 error raised by the adapter itself (the body checks): its status as the code, its
    /// stable code in `data`.
    fn from(e: crate::error::ApiError) -> Self {
        RpcError {
            retry_after: e.retry_after,
            ..RpcError::http(e.code.status(), e.message).with_data(json!({"code": e.code.as_str(), "field": e.field}))
        }
    }
}

/// A successful result and the HTTP status it travels with (200, except where the 2018 server
/// answered a result with another status: a `wait` whose image does not exist is a 400).
#[derive(Debug)]
pub struct Reply {
    /// The `result`.
    pub value: Payload,
    /// The HTTP status.
    pub status: StatusCode,
}

impl From<Value> for Reply {
    fn from(value: Value) -> Self {
        Payload::from(value).into()
    }
}

impl From<Payload> for Reply {
    fn from(value: Payload) -> Self {
        Reply {
            value,
            status: StatusCode::OK,
        }
    }
}

/// A result whose logs 2018 answered as arrays of lines (`stdout`, `stderr` of a JobResult or a
/// turbo result), written line by line as the answer is serialized. As `serde_json::Value`s,
/// the 16 million `""` of a 16 MB log of newlines weighed 1.2 GB (a `Value` and a `String` a
/// line); written from the text, the adapter holds the log and the answer (3 bytes a line).
#[derive(Debug, Default)]
pub struct Payload {
    /// The result; for an object, the entries named in `logs` are written from there instead.
    pub value: Value,
    /// (entry, text): written as the array of the text's lines.
    pub logs: Vec<(&'static str, String)>,
}

impl Payload {
    /// About how many bytes it takes as JSON: each log's text and 3 bytes a line (`"",`), and
    /// room for the rest.
    pub fn json_len_hint(&self) -> usize {
        let logs: usize = self
            .logs
            .iter()
            .map(|(_, t)| t.len() + 3 * t.bytes().filter(|b| *b == b'\n').count() + 8)
            .sum();
        logs + 4096
    }
}

/// `value` as JSON, written into a buffer of `hint` bytes to begin with: one grown by doubling
/// holds up to three times a 48 MB answer while it is copied.
pub fn json_bytes<T: serde::Serialize>(value: &T, hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(hint);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => buf,
        // Only maps with non-string keys fail, and answers have none.
        Err(e) => json!({"jsonrpc": "2.0", "error": {"code": -32603, "message": format!("the answer could not be written: {e}")}})
            .to_string()
            .into_bytes(),
    }
}

/// A JSON answer of these bytes.
pub fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload {
            value,
            logs: Vec::new(),
        }
    }
}

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(entries) = &self.value else {
            return self.value.serialize(s);
        };
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            match self.logs.iter().find(|(name, _)| name == k) {
                Some((_, text)) => map.serialize_entry(k, &Lines(text))?,
                None => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A text as the JSON array of its lines (`str::lines`: `\n` or `\r\n`, no empty last line).
struct Lines<'a>(&'a str);

impl serde::Serialize for Lines<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.lines())
    }
}

/// The success envelope, serialized straight from the payload (no `Value` of it is built).
#[derive(serde::Serialize)]
struct Success<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a Payload,
}

/// Reads one call from a request body. On error, the id when one could be read.
pub fn parse(body: &[u8]) -> Result<Call, (Value, RpcError)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((Value::Null, RpcError::parse("Empty POST request")));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| (Value::Null, RpcError::parse(format!("the body is not JSON: {e}"))))?;
    from_value(v)
}

/// Reads one call from a parsed JSON value.
pub fn from_value(v: Value) -> Result<Call, (Value, RpcError)> {
    let Value::Object(mut o) = v else {
        return Err((
            Value::Null,
            RpcError::invalid_request("a call is a JSON object (batches are not supported)"),
        ));
    };
    let id = o.remove("id").unwrap_or(Value::Null);
    if let Some(j) = o.get("jsonrpc")
        && j != "2.0"
    {
        return Err((id, RpcError::invalid_request("jsonrpc must be \"2.0\"")));
    }
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err((id, RpcError::invalid_request("method must be a string"))),
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => Params::None,
        Some(Value::Array(a)) => Params::Positional(a),
        Some(Value::Object(m)) => Params::Named(m),
        Some(_) => return Err((id, RpcError::invalid_request("params must be an array or an object"))),
    };
    Ok(Call { id, method, params })
}

/// The answer envelope.
pub fn answer(id: &Value, result: Result<Reply, RpcError>) -> Response {
    match result {
        Ok(r) => {
            let body = Success {
                jsonrpc: "2.0",
                id,
                result: &r.value,
            };
            json_response(r.status, json_bytes(&body, r.value.json_len_hint()))
        }
        Err(e) => {
            let mut resp = (
                e.status(),
                Json(json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()})),
            )
                .into_response();
            if let Some(secs) = e.retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_as_the_2018_clients_sent_them() {
        let c = parse(br#"{"method":"submitJobJson","params":{"job":{}}}"#).unwrap();
        assert_eq!((c.id, c.method.as_str()), (Value::Null, "submitJobJson"));
        assert!(matches!(c.params, Params::Named(_)));
        let c = parse(br#"{"jsonrpc":"2.0","id":7,"method":"job","params":["status","x"]}"#).unwrap();
        assert_eq!(c.id, json!(7));
        assert_eq!(c.params, Params::Positional(vec![json!("status"), json!("x")]));
        assert!(matches!(parse(br#"{"method":"status"}"#).unwrap().params, Params::None));
    }

    #[test]
    fn logs_are_written_as_arrays_of_lines() {
        let p = Payload {
            value: json!({"a": 1, "stdout": null, "stderr": "kept"}),
            logs: vec![("stdout", "x\r\n\ny\n".into())],
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"a": 1, "stdout": ["x", "", "y"], "stderr": "kept"})
        );
        assert_eq!(serde_json::to_string(&Payload::from(json!([1]))).unwrap(), "[1]");
    }

    #[test]
    fn bad_envelopes_are_protocol_errors_with_their_http_status() {
        let (_, e) = parse(b"  ").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str(), e.status()),
            (-32700, "Empty POST request", StatusCode::BAD_REQUEST)
        );
        assert_eq!(parse(b"{nope").unwrap_err().1.code, -32700);
        assert_eq!(parse(b"[]").unwrap_err().1.code, -32600);
        let (id, e) = parse(br#"{"id":"a","jsonrpc":"1.0","method":"x"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("a"), -32600));
        assert_eq!(parse(br#"{"method":3}"#).unwrap_err().1.code, -32600);
        assert_eq!(parse(br#"{"method":"x","params":3}"#).unwrap_err().1.code, -32600);
        assert_eq!(RpcError::no_method("x").status(), StatusCode::NOT_FOUND);
        assert_eq!(RpcError::http(StatusCode::NOT_FOUND, "x").code, 404);
        assert_eq!(
            RpcError::http(StatusCode::GATEWAY_TIMEOUT, "x").status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(RpcError::new(-32603, "x").status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
