from proctor.cli.main import app

app(prog_name="proctor")
