//! twilio-stream (skeleton)
