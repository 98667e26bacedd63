"""Entry point of the sample game: loads a level and prints what it would draw."""
import json

def load_level(path):
    with open(path) as f:
        return json.load(f)

if __name__ == "__main__":
    level = load_level("data/levels.json")
    for room in level["rooms"]:
        print(room["name"], len(room["tiles"]))
