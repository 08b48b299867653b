"""Tiny randomly initialised checkpoints of the real transformers classes, saved to a folder.

Built offline (no hub): a byte-level tokenizer made with the ``tokenizers`` library, wrapped in
the model's real processor, and a config with hidden sizes of 16-32 and one or two layers.
The replies are gibberish; what the tests check is that the backends drive the real code paths.
"""

from __future__ import annotations

from pathlib import Path


def byte_tokenizer(special: list[str], **kwargs):
    """A byte-level BPE tokenizer with no merges (256 byte tokens) plus ``special`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def qwen2_audio(folder: Path) -> Path:
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, WhisperFeatureExtractor

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    tokenizer = byte_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    # 8 s windows instead of 30 s keep the audio encoder small; longer user turns are truncated as in the real model
    processor = Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, chunk_length=8), tokenizer=tokenizer
    )
    config = Qwen2AudioConfig(
        audio_config=dict(
            d_model=16,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=32,
            num_mel_bins=128,
            max_source_positions=400,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
        ),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


OMNI_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen2_5_omni(folder: Path) -> Path:
    """Thinker, talker and token2wav (DiT + BigVGAN), all tiny; one speaker "Chelsie" in spk_dict.pt."""
    import torch
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    named = {
        "audio_token": "<|AUDIO|>",
        "audio_bos_token": "<|audio_bos|>",
        "audio_eos_token": "<|audio_eos|>",
        "image_token": "<|IMAGE|>",
        "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>",
        "vision_eos_token": "<|vision_eos|>",
    }
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *named.values(), "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>"]
    tokenizer = byte_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=named)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    tokens = dict(
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
    )
    hidden = 32
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    )
    config = Qwen2_5OmniConfig(
        thinker_config=dict(
            audio_config=dict(
                d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=hidden, n_window=100
            ),
            vision_config=dict(
                depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden, fullatt_block_indexes=[0]
            ),
            text_config=text,
            user_token_id=tokenizer.convert_tokens_to_ids("u"),
            vision_start_token_id=ids["<|vision_bos|>"],
            vision_end_token_id=ids["<|vision_eos|>"],
            **tokens,
        ),
        talker_config=dict(
            vocab_size=8448,
            embedding_size=hidden,
            hidden_size=hidden,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            tts_text_start_token_id=ids["<|tts_bos|>"],
            tts_text_end_token_id=ids["<|tts_eos|>"],
            tts_text_pad_token_id=ids["<|tts_pad|>"],
            vision_start_token_id=ids["<|vision_bos|>"],
            vision_end_token_id=ids["<|vision_eos|>"],
            **tokens,
        ),
        token2wav_config=dict(
            dit_config=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                head_dim=16,
                emb_dim=16,
                ff_mult=1,
                enc_emb_dim=16,
                enc_dim=16,
                enc_channels=[16, 16, 16, 16, 48],
                enc_attention_channels=8,
                enc_se_channels=8,
                look_ahead_layers=[1],
                look_backward_layers=[0],
                num_embeds=8448,  # every talker code (a random talker emits any of them)
            ),
            bigvgan_config=dict(
                upsample_initial_channel=64,  # halved at each of the 6 upsampling stages
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3, 5]],
            ),
        ),
    )
    torch.manual_seed(0)
    model = Qwen2_5OmniForConditionalGeneration(config)
    model.thinker.generation_config.eos_token_id = ids["<|im_end|>"]
    model.thinker.generation_config.pad_token_id = ids["<|endoftext|>"]
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    model.save_pretrained(folder)
    speaker = {"cond": torch.randn(1, 16), "ref_mel": torch.randn(1, 30, 80), "bos_token": ids["<|tts_bos|>"]}
    torch.save({"Chelsie": speaker}, folder / "spk_dict.pt")
    return folder


def omni_processor_without_video(folder: Path):
    """The real ``Qwen2_5OmniProcessor`` for audio and text, assembled without its video processor.

    Its video processor needs torchvision, which has no build for the CPU torch here; audio-only
    prompts never reach it. (On a machine with torchvision, ``from_pretrained`` loads the full one.)
    """
    from transformers import AutoTokenizer, Qwen2_5OmniProcessor, WhisperFeatureExtractor

    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = Qwen2_5OmniProcessor.__new__(Qwen2_5OmniProcessor)
    processor.feature_extractor = WhisperFeatureExtractor.from_pretrained(folder)
    processor.tokenizer = tokenizer
    processor.image_processor = processor.video_processor = None
    processor.chat_template = OMNI_TEMPLATE
    for name in ("image", "audio", "video"):
        setattr(processor, f"{name}_token", getattr(tokenizer, f"{name}_token"))
        setattr(processor, f"{name}_token_id", tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{name}_token")))
    for name in ("vision_bos", "vision_eos", "audio_bos", "audio_eos"):
        setattr(processor, f"{name}_token", getattr(tokenizer, f"{name}_token"))
    return processor


def moshi(folder: Path) -> Path:
    """Moshi with a tiny Mimi codec (24 kHz, 12.5 frames/s, 2 codebooks) and a byte-level text tokenizer."""
    import torch
    from transformers import MoshiConfig, MoshiForConditionalGeneration

    tokenizer = byte_tokenizer(
        ["<pad>", "<unk>", "<s>", "</s>"], pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    mimi = dict(
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[8, 6, 5, 4],  # 24 kHz / 960 = 25 Hz, then the 2x downsample gives 12.5 frames/s
        codebook_size=64,
        codebook_dim=8,
        num_quantizers=2,
        vector_quantization_hidden_dimension=8,
        num_semantic_quantizers=1,
        upsample_groups=16,
        num_hidden_layers=1,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
    )
    config = MoshiConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        ffn_dim=64,
        num_codebooks=2,
        audio_encoder_config=mimi,
        depth_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, num_codebooks=2),
    )
    torch.manual_seed(0)
    model = MoshiForConditionalGeneration(config)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def sample_two_turns():
    """The first two-turn conversation of the bundled sample, with its decoded user audio."""
    from stepeval import audio as audio_io
    from stepeval.data import loader, sources

    conversation = next(c for c in loader.load(sources.bundled_sample()).conversations if len(c.turns) == 2)
    return conversation, [audio_io.read(t.audio_path) for t in conversation.turns]


def play_two_turns(backend, conversation_id: str, turn0: tuple, turn1: tuple):
    """(first reply, second reply, the second's history): the second turn hears the first (audio policy)."""
    from stepeval.types import Message, TurnContext

    (a0, r0), (a1, r1) = turn0, turn1
    first = backend.respond([Message("user", audio=a0, sample_rate=r0)], TurnContext(conversation_id, 0))
    history = [
        Message("user", audio=a0, sample_rate=r0),
        Message("assistant", text=first.text),
        Message("user", audio=a1, sample_rate=r1),
    ]
    return first, backend.respond(history, TurnContext(conversation_id, 1)), history
