"""config.json of real models, written by hand from their published files.

The plan tests build geometries from them; the pipeline tests give the example configs'
backends a checkpoint folder of the model each example names.
"""

LLAMA2_13B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 40,
    "hidden_size": 5120, "num_attention_heads": 40, "num_key_value_heads": 40,
    "intermediate_size": 13824, "vocab_size": 32000, "max_position_embeddings": 4096,
    "torch_dtype": "float16", "tie_word_embeddings": False,
}
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 32,
    "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}
LLAMA3_70B = {
    **LLAMA3_8B, "num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
    "num_key_value_heads": 8, "intermediate_size": 28672,
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 30,
    "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192,
    "dtype": "bfloat16", "tie_word_embeddings": True,
}
QWEN2_0_5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_hidden_layers": 24,
    "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
    "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16", "tie_word_embeddings": True,
}
