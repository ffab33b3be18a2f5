"""The networks: plain nn.Modules, one module per family of them (mlp, dcgan, stackgan, text encoders).

Which networks a model trains, and how they are built from a checkpoint's `model_spec`, is said by the
model's class in families/ (MODELS).
"""
