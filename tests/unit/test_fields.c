/* Unit tests of the field tables (proxy/fields.c) that the configuration and the policy files
 * are read through: kinds, defaults, unknown and required members, the two orders of problems,
 * a field's own words, checks after a value is read, custom readers. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "json.h"

struct thing {
    char *name;
    long count;
    bool on;
    char **tags;
    size_t ntags;
    long inner;
    int custom; /* what the custom reader saw: 0 nothing, 1 the default, 2 a value */
    int after;  /* how often the after check ran */
};

#define T(member) offsetof(struct thing, member)

static void read_custom(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                        const char *key)
{
    (void)f;
    struct thing *t = base;
    t->custom = v ? 2 : 1;
    if (v && !cJSON_IsString(v))
        gw_fields_problem(x, v, key, "must be a word");
}

static void count_after(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                        const char *key)
{
    (void)x, (void)v, (void)f, (void)key;
    ((struct thing *)base)->after++;
}

static const struct gw_field inner_fields[] = {
    {"n", GW_F_INT, T(inner), 1, 9, .idef = 7},
    {NULL},
};
static const struct gw_field thing_fields[] = {
    {"name", GW_F_STR, T(name), .def = "anon", .after = count_after},
    {"count", GW_F_INT, T(count), 0, 10, .idef = 3},
    {"on", GW_F_BOOL, T(on), .idef = 1},
    {"tags", GW_F_STRLIST, T(tags), .off2 = T(ntags), .after = count_after},
    {"inner", GW_F_SECTION, .sub = inner_fields},
    {"word", GW_F_CUSTOM, .custom = read_custom},
    {NULL},
};
static const struct gw_field strict_fields[] = {
    {"name", GW_F_STR, T(name), .required = "is needed", .msg = "wants a name"},
    {"count", GW_F_INT, T(count), 0, 10, .idef = -1, .msg = "wants a small count"},
    {"tags", GW_F_STRLIST, T(tags), .off2 = T(ntags), .msg = "wants words"},
    {"inner", GW_F_SECTION, .sub = inner_fields},
    {NULL},
};

/* Reads text (single quotes for double) with table t; the problems land in e. */
static void read_text(const char *text, const struct gw_field *t, bool unknown_first,
                      struct thing *th, struct gw_errs *e)
{
    char *d = strdup(text);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    struct gw_fields x = {.file = "f.json", .dir = ".", .errs = e, .unknown_first = unknown_first};
    memset(th, 0, sizeof *th);
    gw_fields_defaults(&x, th, t);
    struct gw_json_error je;
    struct gw_json_opts o = {.lines = &x.lines};
    cJSON *root = gw_json_parse(d, strlen(d), &o, &je);
    ck_assert_msg(root != NULL, "%s: %s", d, je.msg);
    gw_fields_walk(&x, root, th, t, "");
    ck_assert(!x.oom);
    cJSON_Delete(root);
    gw_json_lines_free(&x.lines);
    free(d);
}

static void assert_problems(const struct gw_errs *e, const char *const *want, size_t n)
{
    for (size_t i = 0; i < e->problems.n && i < n; i++)
        ck_assert_str_eq(e->problems.v[i], want[i]);
    ck_assert_uint_eq(e->problems.n, n);
}

START_TEST(test_fields_defaults_then_values)
{
    struct thing th;
    struct gw_errs e = {0};
    read_text("{}", thing_fields, false, &th, &e);
    ck_assert_uint_eq(e.problems.n, 0);
    ck_assert_str_eq(th.name, "anon");
    ck_assert_int_eq(th.count, 3);
    ck_assert(th.on);
    ck_assert_ptr_null(th.tags);
    ck_assert_int_eq(th.inner, 7);
    ck_assert_int_eq(th.custom, 1); /* asked for its default */
    ck_assert_int_eq(th.after, 0);
    gw_fields_free(&th, thing_fields);

    read_text("{'name':'n','count':10,'on':false,'tags':['a','b'],'inner':{'n':1},'word':'w'}",
              thing_fields, false, &th, &e);
    ck_assert_uint_eq(e.problems.n, 0);
    ck_assert_str_eq(th.name, "n");
    ck_assert_int_eq(th.count, 10);
    ck_assert(!th.on);
    ck_assert_uint_eq(th.ntags, 2);
    ck_assert_str_eq(th.tags[1], "b");
    ck_assert_ptr_null(th.tags[2]);
    ck_assert_int_eq(th.inner, 1);
    ck_assert_int_eq(th.custom, 2);
    ck_assert_int_eq(th.after, 2); /* name and tags, each read without a problem */
    gw_fields_free(&th, thing_fields);
    gw_errs_free(&e);
}
END_TEST

/* The configuration's order: every problem where it is in the file, in the kinds' words. */
START_TEST(test_fields_problems_in_file_order)
{
    struct thing th;
    struct gw_errs e = {0};
    read_text("{\n'word':5,\n'x':1,\n'count':11,\n'name':'',\n'inner':{'n':0,'y':1},\n"
              "'tags':['a',5,'c'],\n'on':'yes'\n}",
              thing_fields, false, &th, &e);
    static const char *const want[] = {
        "f.json:2: word: must be a word",
        "f.json:3: x: unknown key",
        "f.json:4: count: must be between 0 and 10",
        "f.json:5: name: must be a non-empty string",
        "f.json:6: inner.n: must be between 1 and 9",
        "f.json:6: inner.y: unknown key",
        "f.json:7: tags: entry 1 must be a non-empty string",
        "f.json:8: on: must be true or false",
    };
    assert_problems(&e, want, sizeof want / sizeof *want);
    ck_assert_int_eq(th.after, 0);  /* no check after a value with a problem */
    ck_assert_uint_eq(th.ntags, 1); /* the entries before a bad one are kept */
    ck_assert_str_eq(th.tags[0], "a");
    gw_fields_free(&th, thing_fields);
    gw_errs_free(&e);
}
END_TEST

/* The policy files' order: unknown keys first, then the table's order, sections alike; a
 * missing required member at the object's line; a field's own words. */
START_TEST(test_fields_problems_unknown_first_then_table_order)
{
    struct thing th;
    struct gw_errs e = {0};
    read_text("{\n'inner':{'z':1,'n':'a'},\n'tags':[5],\n'count':2.5,\n'x':1\n}", strict_fields,
              true, &th, &e);
    static const char *const want[] = {
        "f.json:5: x: unknown key",
        "f.json:1: name: is needed",
        "f.json:4: count: wants a small count",
        "f.json:3: tags: wants words",
        "f.json:2: inner.z: unknown key",
        "f.json:2: inner.n: must be an integer",
    };
    assert_problems(&e, want, sizeof want / sizeof *want);
    gw_fields_free(&th, strict_fields);
    gw_errs_free(&e);

    read_text("{'name':5,'count':-1}", strict_fields, true, &th, &e);
    static const char *const want2[] = {
        "f.json:1: name: wants a name",
        "f.json:1: count: wants a small count", /* out of range, in the same words */
    };
    assert_problems(&e, want2, sizeof want2 / sizeof *want2);
    ck_assert_int_eq(th.count, -1); /* the default: nothing read */
    gw_fields_free(&th, strict_fields);
    gw_errs_free(&e);
}
END_TEST

/* gw_fields_read: one value with one field, for custom readers that take several forms. */
START_TEST(test_fields_read_one_value)
{
    struct thing th = {0};
    struct gw_errs e = {0};
    struct gw_fields x = {.file = "f.json", .dir = ".", .errs = &e};
    cJSON *ok = cJSON_Parse("[\"a\",\"b\"]"), *bad = cJSON_Parse("{}");
    ck_assert_int_eq(gw_fields_read(&x, ok, &th, &thing_fields[3], "tags"), 0);
    ck_assert_uint_eq(th.ntags, 2);
    ck_assert_int_eq(th.after, 1);
    ck_assert_int_eq(gw_fields_read(&x, bad, &th, &thing_fields[3], "tags"), -1);
    ck_assert_str_eq(e.problems.v[0], "f.json: tags: must be an array of strings"); /* no line */
    ck_assert_int_eq(th.after, 1);
    cJSON_Delete(ok);
    cJSON_Delete(bad);
    gw_fields_free(&th, thing_fields);
    gw_errs_free(&e);
}
END_TEST

static Suite *fields_suite(void)
{
    Suite *s = suite_create("fields");
    TCase *tc = tcase_create("fields");
    tcase_add_test(tc, test_fields_defaults_then_values);
    tcase_add_test(tc, test_fields_problems_in_file_order);
    tcase_add_test(tc, test_fields_problems_unknown_first_then_table_order);
    tcase_add_test(tc, test_fields_read_one_value);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fields_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
