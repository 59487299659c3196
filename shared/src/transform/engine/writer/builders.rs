//! Column builders for the rows of one partition in progress.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::DataType;

use crate::transform::values::Val;

/// One output column's builder, by Arrow type.
pub(crate) enum ColBuilder {
    I64(Int64Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    pub(crate) fn new(dt: &DataType) -> Self {
        match dt {
            DataType::Int64 => ColBuilder::I64(Int64Builder::new()),
            DataType::Float64 => ColBuilder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => ColBuilder::Dec(
                Decimal128Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Builder::new()),
            ),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::new()),
            DataType::Binary => ColBuilder::Bin(BinaryBuilder::new()),
            DataType::Date32 => ColBuilder::Date(Date32Builder::new()),
            DataType::Timestamp(_, _) => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => ColBuilder::Str(StringBuilder::new()),
        }
    }

    /// Appends a value already checked against the column's type by the parser.
    pub(crate) fn append(&mut self, v: &Val<'_>) {
        match (self, v) {
            (ColBuilder::I64(b), Val::I64(x)) => b.append_value(*x),
            (ColBuilder::F64(b), Val::F64(x)) => b.append_value(*x),
            (ColBuilder::Dec(b), Val::Dec(x)) => b.append_value(*x),
            (ColBuilder::Bool(b), Val::Bool(x)) => b.append_value(*x),
            (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
            (ColBuilder::Bin(b), Val::Bin(x)) => b.append_value(x),
            (ColBuilder::Date(b), Val::Date(x)) => b.append_value(*x),
            (ColBuilder::Ts(b), Val::Ts(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Dec(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::Date(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::Dec(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Bin(b) => Arc::new(b.finish()),
            ColBuilder::Date(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
        }
    }
}
