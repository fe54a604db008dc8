"""Prompt formats: plain completion or the tokenizer's chat template.

The answer instruction tells the model how to present its final answer; the
verifiers read the last \\boxed{}.
"""
DEFAULT_INSTRUCTION = "Put the final answer in \\boxed{}."
STYLES = ("plain", "chat")


def format_prompt(question: str, *, style: str = "plain", instruction: str = DEFAULT_INSTRUCTION,
                  tokenizer=None, system: str | None = None) -> str:
  """The text the policy continues.

  style "plain": "Question: ...\\nAnswer:" (instruction prepended when set);
  style "chat": the tokenizer's chat template with a generation prompt.
  """
  if style == "plain":
    head = f"{instruction}\n" if instruction else ""
    return f"{head}Question: {question}\nAnswer:"
  if style == "chat":
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
      raise ValueError("style 'chat' needs a tokenizer with a chat template")
    content = f"{question}\n{instruction}" if instruction else question
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  raise ValueError(f"unknown prompt style {style!r} (choose plain or chat)")


def format_prompts(examples: list[dict], config, tokenizer) -> list[str]:
  """format_prompt for each example's "question" with config.data's prompt settings."""
  d = config.data
  return [format_prompt(e["question"], style=d.prompt_style, instruction=d.instruction,
                        tokenizer=tokenizer, system=d.system or None) for e in examples]
