"""Task files shared by the TOML-task tests and the bad-input catalogue."""

MINIMAL = """
    templates = ["When {IO} and {S} met, {S} gave it to"]
    answer = "IO"
    contrast = "S"
    keywords = ["IO", "S"]
    [slots]
    IO = ["Mary", "John", "Anne"]
    S = ["Tom", "Sarah", "Paul"]
"""
