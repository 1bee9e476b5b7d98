"""The GUI's pure helpers: value parsing, colours, error lines, scan data."""

from __future__ import annotations

import os

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from nicos.clients.gui.scandata import ScanStore  # noqa: E402
from nicos.clients.gui.values import (  # noqa: E402
    daemon_state,
    device_status_colour,
    device_status_text,
    error_line,
    format_value,
    message_colour,
    parse_status,
    parse_value,
    request_title,
    split_watch_key,
    watch_key,
)


def test_parse_values_only_literals() -> None:
    assert parse_value('1.5') == 1.5
    assert parse_value("(200, 'idle')") == (200, 'idle')
    assert parse_value('[0.0, 0, 0]') == [0.0, 0, 0]
    assert parse_value("__import__('os').system('true')") == "__import__('os').system('true')"
    assert parse_value('<Device sth>') == '<Device sth>'


def test_status() -> None:
    assert parse_status("(220, 'moving')") == (220, 'moving')
    assert parse_status('[240, "error"]') == (240, 'error')
    assert parse_status('1.0') is None
    assert device_status_text((220, 'moving to 5')) == 'busy: moving to 5'
    assert device_status_text((200, '')) == 'ok'
    assert device_status_colour(240) != device_status_colour(200)
    assert device_status_colour(12345) == device_status_colour(999)


def test_daemon_states_have_distinct_colours() -> None:
    words = {daemon_state(s)[0] for s in (-2, -1, 0, 1, 2)}
    assert words == {'idle', 'running', 'break', 'stopping'}
    colours = {daemon_state(s)[1] for s in (-1, 0, 1, 2)}
    assert len(colours) == 4
    assert message_colour(40) != message_colour(20)
    assert message_colour(45) == message_colour(40)


def test_format_value() -> None:
    assert format_value(1.23456, '%.2f') == '1.23'
    assert format_value([1.0, 2], '%.1f') == '1.0, 2.0'
    assert format_value('open', '%.3f') == 'open'
    assert format_value(0.1 + 0.2) == '0.3'


def test_error_line() -> None:
    traceback = ('Traceback (most recent call last):\n'
                 '  File "<script>", line 7, in <module>\n'
                 '  File "/x/nicos/commands/device.py", line 55, in move\n'
                 '  File "<script>", line 3, in helper\n'
                 'ValueError: bad\n')
    assert error_line('ValueError - bad', traceback) == 3
    assert error_line("SyntaxError in script, line 12: invalid syntax\n", None) == 12
    assert error_line('no line here', None) is None


def test_watch_keys_and_titles() -> None:
    assert watch_key('a[1:2]') == 'a[1:2]:default'
    assert split_watch_key('a[1:2]:default') == ('a[1:2]', 'default')
    assert split_watch_key('x') == ('x', 'default')
    assert request_title({'name': 'scan.py', 'script': 'x'}) == 'scan.py'
    assert request_title({'name': None, 'script': 'move(sth, 1)\nwait()\n'}) == \
        'move(sth, 1) ...'


def test_scan_store_builds_curves() -> None:
    store = ScanStore()
    dataset = {'uid': 'u1', 'counter': 3, 'scaninfo': 'scan sth', 'xindex': 0,
               'xvalueinfo': [{'name': 'sth', 'unit': 'deg'}],
               'yvalueinfo': [{'name': 'timer', 'unit': 's'}, {'name': 'mon1', 'unit': 'cts'},
                              {'name': 'ctr1', 'unit': 'cts'}],
               'xresults': [], 'yresults': []}
    scan, new = store.on_dataset(dataset)
    assert new and scan.title == '#3 scan sth'
    assert scan.default_y() == 2
    store.on_datapoint(['u1', [0.0], [1.0, 100, 5]])
    store.on_datapoint(['u1', [0.5], [1.0, 100, None]])  # a missing value is skipped
    store.on_datapoint(['u1', [1.0], [1.0, 100, 7]])
    assert scan.curve(2) == ([0.0, 1.0], [5.0, 7.0])
    assert scan.x_label() == 'sth (deg)'
    # a dataset sent again with all results does not duplicate points
    dataset.update(xresults=[[0.0], [0.5], [1.0]], yresults=[[1, 100, 5], [1, 100, 6],
                                                             [1, 100, 7]])
    store.on_dataset(dataset)
    assert scan.npoints == 3
    # a point of an unknown scan makes a scan with generic names
    other, new = store.on_datapoint(['u2', [1, 2], [3]])
    assert new and other.xnames == ['x1', 'x2'] and other.ynames == ['y1']
    assert store.on_datapoint(['bad']) is None
    assert store.on_dataset({'no': 'uid'}) is None


def test_highlighter_marks_strings_over_lines(qtbot) -> None:
    from PyQt5.QtGui import QTextDocument

    from nicos.clients.gui.highlighter import PythonHighlighter

    document = QTextDocument()
    highlighter = PythonHighlighter(document)
    document.setPlainText('x = """start\nstill string # not a comment\nend"""\ny = 1  # note\n')
    highlighter.rehighlight()  # setPlainText highlights from the event loop
    blocks = [document.findBlockByNumber(i) for i in range(4)]
    assert [b.userState() for b in blocks[:3]] == [2, 2, 0]
    assert highlighter.document() is document


def test_request_title_skips_comments() -> None:
    script = '# align\n\nmaw(mono, 2.5)\nscan(sth, 9, 0.1, 21)\n'
    assert request_title({'name': None, 'script': script}) == 'maw(mono, 2.5) ...'
    assert request_title({'name': None, 'script': 'count(1)', 'reqid': 'abc'}) == 'count(1)'
    assert request_title({'name': None, 'script': '# only\n', 'reqid': 'abcdef0123'}) == \
        'abcdef01'
