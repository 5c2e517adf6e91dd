//! Protocol errors with their reply codes, in the shape RabbitMQ reports them.
//!
//! A soft error closes the channel (Channel.Close); a hard error closes the
//! whole connection (Connection.Close). The reply text starts with the code's
//! name, as RabbitMQ's does ("NOT_FOUND - no queue 'q' in vhost '/'").

use std::fmt;

/// Which reply code, and so whether the channel or the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 311: content too large (unused by RabbitMQ; kept for completeness).
    ContentTooLarge,
    /// 312: unroutable mandatory message (basic.return only).
    NoRoute,
    /// 403: soft.
    AccessRefused,
    /// 404: soft.
    NotFound,
    /// 405: soft.
    ResourceLocked,
    /// 406: soft.
    PreconditionFailed,
    /// 320: hard, server shutting down.
    ConnectionForced,
    /// 501: hard.
    FrameError,
    /// 502: hard.
    SyntaxError,
    /// 503: hard.
    CommandInvalid,
    /// 504: hard.
    ChannelError,
    /// 505: hard.
    UnexpectedFrame,
    /// 506: hard.
    ResourceError,
    /// 530: hard.
    NotAllowed,
    /// 540: hard.
    NotImplemented,
    /// 541: hard.
    InternalError,
}

impl ErrorKind {
    /// The numeric reply code.
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::ContentTooLarge => 311,
            ErrorKind::NoRoute => 312,
            ErrorKind::AccessRefused => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::ResourceLocked => 405,
            ErrorKind::PreconditionFailed => 406,
            ErrorKind::ConnectionForced => 320,
            ErrorKind::FrameError => 501,
            ErrorKind::SyntaxError => 502,
            ErrorKind::CommandInvalid => 503,
            ErrorKind::ChannelError => 504,
            ErrorKind::UnexpectedFrame => 505,
            ErrorKind::ResourceError => 506,
            ErrorKind::NotAllowed => 530,
            ErrorKind::NotImplemented => 540,
            ErrorKind::InternalError => 541,
        }
    }

    /// The constant's name, which RabbitMQ puts at the start of reply texts.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ContentTooLarge => "CONTENT_TOO_LARGE",
            ErrorKind::NoRoute => "NO_ROUTE",
            ErrorKind::AccessRefused => "ACCESS_REFUSED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::ResourceLocked => "RESOURCE_LOCKED",
            ErrorKind::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorKind::ConnectionForced => "CONNECTION_FORCED",
            ErrorKind::FrameError => "FRAME_ERROR",
            ErrorKind::SyntaxError => "SYNTAX_ERROR",
            ErrorKind::CommandInvalid => "COMMAND_INVALID",
            ErrorKind::ChannelError => "CHANNEL_ERROR",
            ErrorKind::UnexpectedFrame => "UNEXPECTED_FRAME",
            ErrorKind::ResourceError => "RESOURCE_ERROR",
            ErrorKind::NotAllowed => "NOT_ALLOWED",
            ErrorKind::NotImplemented => "NOT_IMPLEMENTED",
            ErrorKind::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the connection; soft ones only the channel.
    pub fn is_hard(self) -> bool {
        !matches!(
            self,
            ErrorKind::ContentTooLarge
                | ErrorKind::NoRoute
                | ErrorKind::AccessRefused
                | ErrorKind::NotFound
                | ErrorKind::ResourceLocked
                | ErrorKind::PreconditionFailed
        )
    }
}

/// A protocol error to report to the peer, with the method that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    /// The reply code.
    pub kind: ErrorKind,
    /// The full reply text, code name included.
    pub text: String,
    /// Class id of the failing method (0 when none).
    pub class_id: u16,
    /// Method id of the failing method (0 when none).
    pub method_id: u16,
}

impl AmqpError {
    /// An error whose text is `"<NAME> - <detail>"`.
    pub fn new(kind: ErrorKind, detail: impl fmt::Display) -> Self {
        AmqpError {
            kind,
            text: format!("{} - {}", kind.name(), detail),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attach the failing method's ids, unless already set.
    pub fn at(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// 404 NOT_FOUND.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }
    /// 403 ACCESS_REFUSED.
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::AccessRefused, detail)
    }
    /// 405 RESOURCE_LOCKED.
    pub fn resource_locked(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::ResourceLocked, detail)
    }
    /// 406 PRECONDITION_FAILED.
    pub fn precondition_failed(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::PreconditionFailed, detail)
    }
    /// 501 FRAME_ERROR.
    pub fn frame_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::FrameError, detail)
    }
    /// 502 SYNTAX_ERROR.
    pub fn syntax_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::SyntaxError, detail)
    }
    /// 503 COMMAND_INVALID.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::CommandInvalid, detail)
    }
    /// 504 CHANNEL_ERROR.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::ChannelError, detail)
    }
    /// 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::UnexpectedFrame, detail)
    }
    /// 530 NOT_ALLOWED.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotAllowed, detail)
    }
    /// 540 NOT_IMPLEMENTED.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotImplemented, detail)
    }
    /// 541 INTERNAL_ERROR.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InternalError, detail)
    }

    /// The reply text cut to fit a short string, ending in "..." when cut,
    /// as RabbitMQ does.
    pub fn short_text(&self) -> String {
        truncate_short(&self.text)
    }
}

/// Cut a string to at most 255 bytes on a char boundary, marking the cut.
pub fn truncate_short(text: &str) -> String {
    if text.len() <= 255 {
        return text.to_string();
    }
    let mut end = 252;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) on {}.{}",
            self.text,
            self.kind.code(),
            self.class_id,
            self.method_id
        )
    }
}

impl std::error::Error for AmqpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_starts_with_code_name() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'").at(50, 10);
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.kind.code(), 404);
        assert!(!e.kind.is_hard());
        assert_eq!((e.class_id, e.method_id), (50, 10));
    }

    #[test]
    fn long_texts_are_cut_with_ellipsis() {
        let e = AmqpError::not_found("x".repeat(400));
        let t = e.short_text();
        assert_eq!(t.len(), 255);
        assert!(t.ends_with("..."));
    }

    #[test]
    fn hard_and_soft() {
        assert!(ErrorKind::NotAllowed.is_hard());
        assert!(ErrorKind::FrameError.is_hard());
        assert!(!ErrorKind::PreconditionFailed.is_hard());
    }
}
