//! Every field and enum value in `proto/` matches Google's published definitions, recorded in
//! `tests/data/google-speech-fields.tsv` (message, field, number, type). A wrong field number is
//! silent garbage on the wire, so this test walks the compiled descriptors against the table.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/speech_descriptors.bin"));
const TABLE: &str = include_str!("data/google-speech-fields.tsv");

#[derive(Debug, Default)]
struct Compiled {
    /// message full name -> field name -> rendered "number type".
    fields: BTreeMap<String, BTreeMap<String, String>>,
    /// enum full name -> value name -> number.
    enums: BTreeMap<String, BTreeMap<String, i32>>,
}

fn scalar_name(kind: Type) -> &'static str {
    match kind {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => "",
    }
}

fn collect_message(prefix: &str, message: &DescriptorProto, compiled: &mut Compiled) {
    let name = format!("{prefix}.{}", message.name());
    let mut fields = BTreeMap::new();
    for field in &message.field {
        let mut rendered = String::new();
        if field.label() == Label::Repeated {
            rendered.push_str("repeated ");
        }
        if field.proto3_optional() {
            rendered.push_str("optional ");
        }
        match field.r#type() {
            Type::Message | Type::Enum => {
                rendered.push_str(field.type_name().trim_start_matches('.'))
            }
            scalar => rendered.push_str(scalar_name(scalar)),
        }
        if let Some(index) = field.oneof_index
            && !field.proto3_optional()
        {
            let oneof = message.oneof_decl[usize::try_from(index).unwrap()].name();
            rendered.push_str(&format!(" (oneof {oneof})"));
        }
        if field
            .options
            .as_ref()
            .is_some_and(|options| options.deprecated())
        {
            rendered.push_str(" [deprecated]");
        }
        fields.insert(
            field.name().to_owned(),
            format!("{} {rendered}", field.number()),
        );
    }
    compiled.fields.insert(name.clone(), fields);
    for nested in &message.nested_type {
        collect_message(&name, nested, compiled);
    }
    for nested in &message.enum_type {
        collect_enum(&name, nested, compiled);
    }
}

fn collect_enum(prefix: &str, enumeration: &EnumDescriptorProto, compiled: &mut Compiled) {
    let values = enumeration
        .value
        .iter()
        .map(|value| (value.name().to_owned(), value.number()))
        .collect();
    compiled
        .enums
        .insert(format!("{prefix}.{}", enumeration.name()), values);
}

fn compiled() -> Compiled {
    let set = FileDescriptorSet::decode(DESCRIPTORS).unwrap();
    let mut compiled = Compiled::default();
    for file in &set.file {
        let prefix = file.package();
        for message in &file.message_type {
            collect_message(prefix, message, &mut compiled);
        }
        for enumeration in &file.enum_type {
            collect_enum(prefix, enumeration, &mut compiled);
        }
    }
    compiled
}

#[test]
fn every_field_matches_googles_table_and_only_unmodelled_message_fields_are_left_out() {
    let compiled = compiled();
    let mut checked = 0;
    let mut left_out = BTreeSet::new();
    let mut table_fields: BTreeSet<(String, String)> = BTreeSet::new();
    for line in TABLE.lines().skip(1).filter(|line| !line.trim().is_empty()) {
        let columns: Vec<&str> = line.split('\t').collect();
        let [message, field, number, kind] = columns[..] else {
            panic!("malformed row {line:?}")
        };
        if kind == "enum-value" {
            let values = compiled
                .enums
                .get(message)
                .unwrap_or_else(|| panic!("enum {message} missing"));
            assert_eq!(
                values.get(field),
                Some(&number.parse().unwrap()),
                "{message}.{field}"
            );
            checked += 1;
            continue;
        }
        table_fields.insert((message.to_owned(), field.to_owned()));
        let fields = compiled
            .fields
            .get(message)
            .unwrap_or_else(|| panic!("message {message} missing"));
        match fields.get(field) {
            Some(rendered) => {
                assert_eq!(rendered, &format!("{number} {kind}"), "{message}.{field}");
                checked += 1;
            }
            None => {
                // Only fields whose message type crmd does not model may be left out.
                let type_name = kind
                    .trim_start_matches("optional ")
                    .trim_start_matches("repeated ");
                let type_name = type_name.split(' ').next().unwrap();
                assert!(
                    type_name.starts_with("google.") && !compiled.fields.contains_key(type_name),
                    "{message}.{field} ({kind}) is left out although its type is modelled"
                );
                left_out.insert(format!("{message}.{field}"));
            }
        }
    }
    // Nothing in our protos that Google's table does not have (well-known types aside).
    for (message, fields) in &compiled.fields {
        if message.starts_with("google.protobuf.")
            && !table_fields.iter().any(|(m, _)| m == message)
        {
            continue;
        }
        for field in fields.keys() {
            assert!(
                table_fields.contains(&(message.clone(), field.clone())),
                "{message}.{field} is not Google's"
            );
        }
    }
    let expected_left_out: BTreeSet<String> = [
        "google.cloud.speech.v1.RecognitionConfig.adaptation",
        "google.cloud.speech.v1.RecognitionConfig.diarization_config",
        "google.cloud.speech.v1.RecognitionConfig.metadata",
        "google.cloud.speech.v1.RecognitionConfig.transcript_normalization",
        "google.cloud.speech.v1.StreamingRecognizeResponse.speech_adaptation_info",
        "google.cloud.texttospeech.v1.StreamingSynthesisInput.multi_speaker_markup",
        "google.cloud.texttospeech.v1.StreamingSynthesizeConfig.advanced_voice_options",
        "google.cloud.texttospeech.v1.StreamingSynthesizeConfig.custom_pronunciations",
        "google.cloud.texttospeech.v1.SynthesisInput.custom_pronunciations",
        "google.cloud.texttospeech.v1.SynthesisInput.multi_speaker_markup",
        "google.cloud.texttospeech.v1.SynthesizeSpeechRequest.advanced_voice_options",
        "google.cloud.texttospeech.v1.VoiceSelectionParams.custom_voice",
        "google.cloud.texttospeech.v1.VoiceSelectionParams.multi_speaker_voice_config",
        "google.cloud.texttospeech.v1.VoiceSelectionParams.voice_clone",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(left_out, expected_left_out);
    let rows = TABLE
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count();
    assert_eq!(checked + left_out.len(), rows);
}

#[test]
fn mulaw_differs_between_speech_to_text_and_text_to_speech() {
    use speech::proto::speech_v1::recognition_config::AudioEncoding as SttEncoding;
    use speech::proto::texttospeech_v1::AudioEncoding as TtsEncoding;
    assert_eq!(SttEncoding::Mulaw as i32, 3);
    assert_eq!(TtsEncoding::Mulaw as i32, 5);
}
