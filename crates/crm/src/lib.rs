//! crm (skeleton)
