"""The task prompts of the released Florence-2 processors (used to train the tiny tokenizer's merges)."""

TASK_PROMPTS: tuple[str, ...] = (
    "What is the text in the image?",
    "What is the text in the image, with regions?",
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.",
    "Locate the phrases in the caption:",
    "Locate in the image with mask",
    "What is the polygon mask of region",
    "Locate in the image.",
    "What is the region",
    "What does the region describe?",
    "What text is in the region",
)
