"""What a training run hands to the nodes."""


class TrainedLoRA(dict):
    """ComfyUI-native LoRA weights (``diffusion_model.<layer>.lora_up.weight`` ...), usable wherever ComfyUI
    expects a ``LORA_MODEL`` (e.g. the stock 'Load LoRA Model' node), plus ``info``: how it was trained."""

    def __init__(self, weights: dict, info: dict, losses=(), learning_rates=()):
        super().__init__(weights)
        self.info = dict(info)
        self.losses = list(losses)
        self.learning_rates = list(learning_rates)
