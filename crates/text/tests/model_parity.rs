//! Parity with transformers' `CLIPTextModel` on the references of
//! `scripts/gen_text_fixtures.py`: the SD 1.x-like tiny pipeline
//! (quick_gelu, pad = EOS, legacy `eos_token_id` 2, `text_model.*` names
//! with the `position_ids` buffer) and the SD 2.x-like one (gelu, pad `!`,
//! transformers 5 names). The prompts are tokenized here and must give the
//! reference ids; every hidden state, the last hidden state, the pooled
//! output, the clip_skip=1 embeddings and the padding-masked outputs must
//! agree to 1e-5 of their scale (float32, CPU).

mod common;

use common::{fixtures, max_rel};
use tch::{Device, Tensor};
use text::{batch_tensors, ClipTextModel, ClipTokenizer, DType};

const TOLERANCE: f64 = 1e-5;

fn prompts(case: &str) -> Vec<String> {
    let path = fixtures().join(format!("{case}.safetensors"));
    let (_, meta) = tensor::safetensors::load_with_metadata(&path, Device::Cpu).unwrap();
    serde_json::from_str(&meta["prompts"]).unwrap()
}

#[test]
fn hidden_states_match_transformers() {
    let mut report = Vec::new();
    for case in ["sd1-tiny", "sd2-tiny"] {
        let refs = common::references(case);
        let dir = fixtures().join(case);
        let tok = ClipTokenizer::from_folder(&dir).unwrap();
        let model = ClipTextModel::load(&dir, Device::Cpu, DType::F32).unwrap();
        let (ids, mask) =
            batch_tensors(&tok.encode_batch(&prompts(case)).unwrap(), Device::Cpu).unwrap();
        assert!(ids.equal(&refs["input_ids"]), "{case}: input ids");
        assert!(
            mask.equal(&refs["attention_mask"]),
            "{case}: attention mask"
        );

        let out = tch::no_grad(|| model.forward(&ids, None)).unwrap();
        let mut got: Vec<(String, Tensor)> = vec![
            (
                "last_hidden_state".into(),
                out.last_hidden_state.shallow_clone(),
            ),
            ("pooler_output".into(), out.pooled_output.shallow_clone()),
        ];
        assert_eq!(out.hidden_states.len(), 3, "{case}");
        for (i, h) in out.hidden_states.iter().enumerate() {
            got.push((format!("hidden_states.{i}"), h.shallow_clone()));
        }
        let skip = tch::no_grad(|| model.prompt_embeds(&ids, None, Some(1))).unwrap();
        got.push(("clip_skip_1".into(), skip));
        let masked = tch::no_grad(|| model.forward(&ids, Some(&mask))).unwrap();
        got.push(("masked.last_hidden_state".into(), masked.last_hidden_state));
        got.push(("masked.pooler_output".into(), masked.pooled_output));
        for (name, t) in got {
            let want = &refs[&name];
            assert_eq!(t.size(), want.size(), "{case}: {name}");
            let err = max_rel(&t, want);
            println!("{case} {name}: max relative error {err:.2e}");
            report.push((format!("{case} {name}"), err));
        }
    }
    for (what, err) in report {
        assert!(err <= TOLERANCE, "{what}: {err:.2e} > {TOLERANCE:e}");
    }
}

/// The pooled output sits at the first EOS of each row: found as the
/// largest id with the legacy `eos_token_id` 2 (sd1), by the id itself
/// otherwise (sd2).
#[test]
fn pooled_output_is_taken_at_the_end_of_text() {
    for case in ["sd1-tiny", "sd2-tiny"] {
        let refs = common::references(case);
        let model = ClipTextModel::load(fixtures().join(case), Device::Cpu, DType::F32).unwrap();
        let ids = &refs["input_ids"];
        let out = tch::no_grad(|| model.forward(ids, None)).unwrap();
        let first_eos = ids.eq(1513).to_kind(tch::Kind::Int).argmax(1, false);
        for row in 0..ids.size()[0] {
            let p = first_eos.int64_value(&[row]);
            let want = out.last_hidden_state.get(row).get(p);
            assert!(out.pooled_output.get(row).equal(&want), "{case} row {row}");
        }
    }
}
