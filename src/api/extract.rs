//! Extractors for JSON bodies, query strings and path parameters whose rejections
//! are [`ApiError`]s, so that a malformed request gets the same JSON error body as
//! every other failure.
//!
//! Handlers use these in place of axum's `Json`, `Query` and `Path`, which reject
//! with plain text (`clippy.toml` bans them). A rejection names the part of the
//! request (body, query string, path) and the reason, but never a value taken
//! from the request: serde's messages quote the offending value (`invalid type:
//! string "..."`), and in a body that value may be secret content.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::{ApiError, internal};

/// A JSON request body, or a JSON response.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct Json<T>(pub T);

/// The deserialized query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// The route's path parameters, percent-decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        serde_json::from_slice(&bytes).map(Json).map_err(|error| json_rejection(&error))
    }
}

#[allow(clippy::disallowed_types, reason = "this is the wrapper that the ban points to")]
impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[allow(clippy::disallowed_types, reason = "this is the wrapper that the ban points to")]
impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                // The innermost cause is the deserializer's message after the field's path.
                let reason = innermost_cause(&rejection);
                Err(ApiError::bad_request(format!("invalid query string: {}", without_values(&reason))))
            }
        }
    }
}

#[allow(clippy::disallowed_types, reason = "this is the wrapper that the ban points to")]
impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                // A tuple's errors give the parameter's position; the route names it.
                let names = match axum::extract::RawPathParams::from_request_parts(parts, state).await {
                    Ok(params) => params.iter().map(|(name, _)| name.to_owned()).collect(),
                    Err(_) => Vec::new(),
                };
                Err(path_rejection(rejection, &names))
            }
        }
    }
}

/// Accepts `application/json` and any `application/*+json`, with parameters.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "content_too_large",
            "the request body is larger than this route accepts",
        ),
        other => ApiError::bad_request(format!("failed to read the request body: {}", innermost_cause(&other))),
    }
}

/// Describes a body that is not JSON or does not fit the expected type.
fn json_rejection(error: &serde_json::Error) -> ApiError {
    // serde_json appends the location to its message, except for errors it could not place.
    let location = match error.line() {
        0 => String::new(),
        line => format!(" at line {line} column {}", error.column()),
    };
    let text = error.to_string();
    let message = text.strip_suffix(&location).unwrap_or(&text);
    let reason = match error.classify() {
        // Syntax messages name what the parser expected, never the input.
        Category::Syntax | Category::Eof | Category::Io => message.to_owned(),
        Category::Data => without_values(message),
    };
    ApiError::bad_request(format!("invalid JSON body: {reason}{location}"))
}

/// Describes path parameters that do not fit the handler's type; `names` are the
/// route's parameter names in order.
fn path_rejection(rejection: PathRejection, names: &[String]) -> ApiError {
    use axum::extract::path::ErrorKind;

    let PathRejection::FailedToDeserializePathParams(error) = rejection else {
        return internal(format!("the route has no path parameters: {rejection}"));
    };
    let reason = match error.into_kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => format!(
            "the {key} segment is not valid UTF-8 once percent-decoded; percent-encode each byte of its UTF-8 form"
        ),
        ErrorKind::ParseErrorAtKey { key, expected_type, .. } => format!("the {key} segment must be a {expected_type}"),
        ErrorKind::ParseErrorAtIndex { index, expected_type, .. } => match names.get(index) {
            Some(key) => format!("the {key} segment must be a {expected_type}"),
            None => format!("path parameter {index} must be a {expected_type}"),
        },
        ErrorKind::ParseError { expected_type, .. } => format!("a path parameter must be a {expected_type}"),
        ErrorKind::DeserializeError { key, message, .. } => {
            format!("the {key} segment is invalid: {}", without_values(&message))
        }
        ErrorKind::Message(message) => without_values(&message),
        // The route's parameters do not fit the handler's type: a bug, not a bad request.
        other => return internal(format!("the route's path parameters do not fit its handler: {other}")),
    };
    ApiError::bad_request(format!("invalid path: {reason}"))
}

/// Returns the message of the last error in `error`'s chain of sources.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// Kinds of input that serde's `invalid type` and `invalid value` messages name
/// before the input's value (serde 1.0 `Unexpected`, with serde_json's `null`).
const UNEXPECTED_KINDS: [&str; 17] = [
    "boolean",
    "integer",
    "floating point",
    "character",
    "string",
    "byte array",
    "unit value",
    "null",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
];

/// Rewrites a serde error message without the input values it quotes.
///
/// serde formats `invalid type: string "hunter2", expected u64`, `invalid value:
/// ...`, `unknown field `x`, expected ...` and `unknown variant `x`, expected
/// ...`. The part after the last `, expected ` comes from the target type, so
/// splitting there keeps it whatever the quoted value contains. axum's query
/// extractor puts the path of the field before the message (`after: ...`): it is
/// kept, except before `unknown field`, where it is the unknown name. Other messages (`missing field`, `duplicate field`, `invalid length`, parse
/// errors of numbers) quote only names of the target type and pass unchanged.
fn without_values(message: &str) -> String {
    const REASONS: [&str; 4] = ["invalid type: ", "invalid value: ", "unknown field `", "unknown variant `"];
    let found = REASONS.iter().filter_map(|reason| message.find(reason).map(|at| (at, *reason))).min();
    let Some((at, reason)) = found else {
        return message.to_owned();
    };
    let (mut field, rest) = (&message[..at], &message[at + reason.len()..]);
    let reason = reason.trim_end_matches([':', ' ', '`']);
    if reason == "unknown field" {
        field = "";
    }
    let described = match reason {
        "invalid type" | "invalid value" => unexpected_without_value(reason, rest),
        _ => match rest.rsplit_once("`, expected ") {
            Some((_, expected)) => format!("{reason}, expected {expected}"),
            None if rest.ends_with("`, there are no fields") => format!("{reason}: there are no fields"),
            None => reason.to_owned(),
        },
    };
    format!("{field}{described}")
}

/// Describes `invalid type: <unexpected>, expected <expected>` with the kind of the
/// unexpected input but not its value.
fn unexpected_without_value(reason: &str, rest: &str) -> String {
    let kind = UNEXPECTED_KINDS
        .iter()
        .filter(|kind| rest.strip_prefix(**kind).is_some_and(|after| after.starts_with([' ', ','])))
        .max_by_key(|kind| kind.len());
    let reason = match kind {
        Some(kind) => format!("{reason}: {kind}"),
        None => reason.to_owned(),
    };
    match rest.rsplit_once(", expected ") {
        Some((_, expected)) => format!("{reason}, expected {expected}"),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_removed_from_type_errors() {
        let message = "invalid type: string \"hunter2, expected x\", expected u64";
        assert_eq!(without_values(message), "invalid type: string, expected u64");
        assert_eq!(without_values("invalid value: integer `300`, expected u8"), "invalid value: integer, expected u8");
        assert_eq!(without_values("invalid type: null, expected a string"), "invalid type: null, expected a string");
        assert_eq!(without_values("invalid type: unit variant, expected x"), "invalid type: unit variant, expected x");
    }

    #[test]
    fn unknown_names_removed() {
        let message = "unknown field `hunter2`, expected `ttl_secs`";
        assert_eq!(without_values(message), "unknown field, expected `ttl_secs`");
        let message = "unknown field `a`, expected x`, expected one of `b`, `c`";
        assert_eq!(without_values(message), "unknown field, expected one of `b`, `c`");
        let message = "unknown variant `hunter2`, expected `a` or `b`";
        assert_eq!(without_values(message), "unknown variant, expected `a` or `b`");
        let message = "unknown field `hunter2`, there are no fields";
        assert_eq!(without_values(message), "unknown field: there are no fields");
    }

    #[test]
    fn messages_without_values_kept() {
        for message in ["missing field `roles`", "invalid length 3, expected 2", "invalid digit found in string"] {
            assert_eq!(without_values(message), message);
        }
    }

    #[test]
    fn field_name_before_message_kept() {
        let message = "after: invalid type: string \"hunter2\", expected u64";
        assert_eq!(without_values(message), "after: invalid type: string, expected u64");
        assert_eq!(without_values("after: invalid digit found in string"), "after: invalid digit found in string");
        let message = "hunter2: unknown field `hunter2`, expected `all`";
        assert_eq!(without_values(message), "unknown field, expected `all`");
    }

    #[test]
    fn unknown_kind_of_input_dropped() {
        assert_eq!(without_values("invalid type: hunter2, expected u64"), "invalid type, expected u64");
    }

    #[test]
    fn json_errors_keep_location_and_drop_values() {
        let error = serde_json::from_str::<u64>("\"hunter2\"").unwrap_err();
        let message = json_rejection(&error).message;
        assert_eq!(message, "invalid JSON body: invalid type: string, expected u64 at line 1 column 9");

        let error = serde_json::from_str::<serde_json::Value>("{hunter2").unwrap_err();
        let message = json_rejection(&error).message;
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.starts_with("invalid JSON body: key must be a string"), "{message}");
    }

    #[test]
    fn json_content_types_accepted() {
        let accepted = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(value));
            has_json_content_type(&headers)
        };
        assert!(accepted("application/json"));
        assert!(accepted("Application/JSON; charset=utf-8"));
        assert!(accepted("application/merge-patch+json"));
        assert!(!accepted("text/plain"));
        assert!(!accepted("application/jsonx"));
        assert!(!has_json_content_type(&HeaderMap::new()));
    }
}
