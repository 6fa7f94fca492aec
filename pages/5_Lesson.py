"""Lesson: a guided tour of the ideas in a few steps, each opening another page in a prepared state
(links carry their settings in the URL), with short notes for the teacher. Works offline."""
from __future__ import annotations

import streamlit as st

from pages.ui import lesson, state
from pages.ui import url_state as url
from pages.ui.nav import page_setup
from pages.ui.widgets import gallery, zoo_choices

page_setup("Lesson")
link = url.incoming()
st.title("Lesson: attention, step by step")
st.markdown(
    "Five short steps. Read a step, **predict** what you will see, then open a link: it opens "
    "another page already set up (image, model, settings). Come back here with the **Lesson** "
    "entry in the sidebar. Every link can be copied and shared: it reproduces the view exactly."
)

count = len(lesson.STEPS)
link.adopt([url.Setting("step", url.integer("lesson step", 1, count), url.to_state(state.LESSON_STEP))])
chosen_step = state.persisted(
    st.segmented_control, "Step", state.LESSON_STEP, 1, options=list(range(1, count + 1)),
    format_func=lambda n: f"{n}. {lesson.STEPS[n - 1].title}", selection_mode="single", width="stretch",
)
step_number = int(chosen_step or 1)  # clicking the selected step again deselects it: stay on step 1
state.put(state.LESSON_STEP, step_number)
url.publish({"step": step_number})
step = lesson.STEPS[step_number - 1]

st.header(f"Step {step_number} of {count}: {step.title}")
st.markdown(step.text)
model_ids = {c.id for c in zoo_choices()}
examples = {e.file for e in gallery()}
for index, preset in enumerate(step.presets):
    settings = lesson.available(preset, model_ids, examples)
    st.page_link(preset.page, label=preset.label, icon=":material/open_in_new:",
                 query_params=url.link_params(settings), help="Opens the page in this state")
with st.expander("Teacher notes", expanded=False):
    st.markdown(step.notes)

left, _, right = st.columns([1, 3, 1])
if step_number > 1:
    left.button("← Previous step", key="lesson.previous", width="stretch",
                on_click=state.put, args=(state.LESSON_STEP, step_number - 1))
if step_number < count:
    right.button("Next step →", key="lesson.next", width="stretch", type="primary",
                 on_click=state.put, args=(state.LESSON_STEP, step_number + 1))
