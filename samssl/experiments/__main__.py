"""``python -m samssl.experiments {compare BUNDLE ...|leaderboard ...|traces RUN ...}``."""

from samssl.experiments.cli import main

if __name__ == "__main__":
    main()
