"""Training-loop hooks for tests (the loop's TrainingHooks interface): record what the loop reports."""


class RecordingHooks:
    """Records steps, checkpoints and the partial LoRA of an interrupted run. ``interrupt_at``: press Cancel after
    that step. ``on_checkpoint(step, weights)``: called every ``checkpoint_every`` steps; its result is recorded."""

    def __init__(self, interrupt_at=None, checkpoint_every=0, on_checkpoint=None):
        self.interrupt_at, self.checkpoint_every, self.checkpoint_fn = interrupt_at, checkpoint_every, on_checkpoint
        self.steps, self.losses, self.checkpoints, self.partial = [], [], [], []

    def on_step(self, step, total, loss, lr):
        import comfy.model_management as mm
        self.steps.append(step)
        self.losses.append(loss)
        if step == self.interrupt_at:
            mm.interrupt_current_processing(True)

    def on_checkpoint(self, step, weights):
        result = self.checkpoint_fn(step, weights) if self.checkpoint_fn else None
        self.checkpoints.append((step, result))

    def on_interrupt(self, partial):
        self.partial.append(partial)
